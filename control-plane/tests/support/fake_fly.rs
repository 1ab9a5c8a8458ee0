//! A fake Fly Machines API on a loopback port, following the published v1
//! contract closely enough to drive `FlyMachines`: the same paths, bodies
//! and `{"error": "..."}` shapes, bearer-token auth (401 on a wrong token),
//! state transitions that take `boot` to settle (restart → `starting` →
//! `started`; stop → `stopping` → `stopped`; create → `created` →
//! `started`; destroy → gone from the list), the `wait` endpoint (408 when
//! its timeout passes), and injectable faults (429 with `Retry-After`, 500,
//! a slow answer).
//!
//! Transitions are applied lazily, when a request looks: no background task.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "fake-fly-token-5ecr3t";

/// A fault the next request(s) get instead of their answer.
#[derive(Clone, Debug)]
pub enum Fault {
    TooManyRequests {
        retry_after_secs: u64,
    },
    ServerError,
    /// Answer normally, after this long.
    Slow(Duration),
}

pub struct FakeFly {
    pub url: String,
    world: Arc<Mutex<World>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeFly {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct World {
    app: String,
    machines: Vec<FakeMachine>,
    /// Each applied once, in order, to the next request whose
    /// `METHOD /path?query` starts with its prefix (`None`: any request).
    faults: VecDeque<(Option<String>, Fault)>,
    /// Applied to every request while set.
    always: Option<Fault>,
    /// `METHOD /path?query` of every request, faults included.
    requests: Vec<String>,
    boot: Duration,
    /// Machines that never finish starting.
    stuck: HashSet<String>,
    stick_new: bool,
    private_ip: String,
    seq: u64,
}

struct FakeMachine {
    id: String,
    name: String,
    region: String,
    state: String,
    config: Value,
    instance_id: String,
    created: u64,
    /// The state it reaches, and when.
    settles: Option<(Instant, &'static str)>,
}

type Shared = Arc<Mutex<World>>;

impl FakeFly {
    /// Serves app `app` on 127.0.0.1:0; machines report `private_ip` (point
    /// it where a test's fake edge admin listens).
    pub async fn start(app: &str, private_ip: &str) -> FakeFly {
        let world = Arc::new(Mutex::new(World {
            app: app.into(),
            machines: Vec::new(),
            faults: VecDeque::new(),
            always: None,
            requests: Vec::new(),
            boot: Duration::from_millis(50),
            stuck: HashSet::new(),
            stick_new: false,
            private_ip: private_ip.into(),
            seq: 0,
        }));
        let machine = "/v1/apps/{app}/machines/{id}";
        let router = axum::Router::new()
            .route("/v1/apps/{app}/machines", get(list).post(create))
            .route(machine, get(show).delete(destroy))
            .route(&format!("{machine}/{{verb}}"), get(wait).post(act))
            .layer(middleware::from_fn_with_state(world.clone(), gate))
            .with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        FakeFly { url, world, server }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    /// A started machine, as if created long ago; returns its id.
    pub fn add_started(&self, name: &str, region: &str, config: Value) -> String {
        let mut w = self.world();
        let id = w.insert(name, region, config);
        if let Some(m) = w.machines.last_mut() {
            m.state = "started".into();
            m.settles = None;
        }
        id
    }

    pub fn set_state(&self, id: &str, state: &str) {
        let mut w = self.world();
        if let Some(m) = w.machines.iter_mut().find(|m| m.id == id) {
            m.state = state.into();
            m.settles = None;
        }
    }

    pub fn state(&self, id: &str) -> Option<String> {
        let mut w = self.world();
        w.settle();
        w.machines
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.state.clone())
    }

    pub fn ids(&self) -> Vec<String> {
        self.world().machines.iter().map(|m| m.id.clone()).collect()
    }

    pub fn config(&self, id: &str) -> Option<Value> {
        let w = self.world();
        w.machines
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.config.clone())
    }

    pub fn fail_next(&self, fault: Fault, times: usize) {
        let faults = std::iter::repeat_n((None, fault), times);
        self.world().faults.extend(faults);
    }

    /// The next request starting with `request` (`POST /v1/apps/…`) gets `fault`.
    pub fn fail_next_on(&self, request: &str, fault: Fault) {
        self.world().faults.push_back((Some(request.into()), fault));
    }

    pub fn fail_always(&self, fault: Option<Fault>) {
        self.world().always = fault;
    }

    /// This machine never gets past `starting`.
    pub fn stick(&self, id: &str) {
        self.world().stuck.insert(id.into());
    }

    /// Machines created from now on never get past `starting`.
    pub fn stick_new_machines(&self) {
        self.world().stick_new = true;
    }

    pub fn requests(&self) -> Vec<String> {
        self.world().requests.clone()
    }
}

impl World {
    fn insert(&mut self, name: &str, region: &str, config: Value) -> String {
        self.seq += 1;
        let id = format!("e28{:011x}", self.seq * 7919);
        if self.stick_new {
            self.stuck.insert(id.clone());
        }
        self.machines.push(FakeMachine {
            id: id.clone(),
            name: name.into(),
            region: region.into(),
            state: "created".into(),
            config,
            instance_id: format!("01J{:023X}", self.seq),
            created: self.seq,
            settles: None,
        });
        self.transition(&id, "created", "started");
        id
    }

    /// `now` → the machine is `now`, then `target` after `boot` (never,
    /// for a stuck machine going to `started`).
    fn transition(&mut self, id: &str, now: &str, target: &'static str) {
        let boot = self.boot;
        let stuck = self.stuck.contains(id);
        self.seq += 1;
        let seq = self.seq;
        if let Some(m) = self.machines.iter_mut().find(|m| m.id == id) {
            m.state = now.into();
            m.settles = (!(stuck && target == "started")).then(|| (Instant::now() + boot, target));
            if target == "started" {
                m.instance_id = format!("01J{seq:023X}");
            }
        }
    }

    fn settle(&mut self) {
        let now = Instant::now();
        for m in &mut self.machines {
            if let Some((at, target)) = m.settles
                && at <= now
            {
                m.state = target.into();
                m.settles = None;
            }
        }
    }

    /// The machine's index, after applying due transitions.
    fn find(&mut self, id: &str) -> Option<usize> {
        self.settle();
        self.machines.iter().position(|m| m.id == id)
    }

    fn json(&self, m: &FakeMachine) -> Value {
        let created = chrono::DateTime::from_timestamp(1_767_225_600 + m.created as i64, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        json!({
            "id": m.id,
            "name": m.name,
            "state": m.state,
            "region": m.region,
            "instance_id": m.instance_id,
            "private_ip": self.private_ip,
            "config": m.config,
            "image_ref": {"registry": "registry.fly.io", "repository": "portico-edge", "tag": "latest"},
            "created_at": created,
            "updated_at": created,
            "events": [],
        })
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "machine not found")
}

fn ok() -> Response {
    Json(json!({"ok": true})).into_response()
}

/// Records the request, applies a fault, checks the token and the app.
async fn gate(State(world): State<Shared>, request: Request, next: Next) -> Response {
    let fault = {
        let mut w = world.lock().unwrap();
        let uri = request.uri();
        let line = format!("{} {}", request.method(), uri);
        let at = w
            .faults
            .iter()
            .position(|(prefix, _)| prefix.as_ref().is_none_or(|p| line.starts_with(p.as_str())));
        w.requests.push(line);
        let once = at
            .and_then(|at| w.faults.remove(at))
            .map(|(_, fault)| fault);
        once.or_else(|| w.always.clone())
    };
    match fault {
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
            return response;
        }
        Some(Fault::ServerError) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error");
        }
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await, // allow-sleep: the fault is slowness
        None => {}
    }
    if !authorized(request.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "You must be authenticated to view this.",
        );
    }
    let app = world.lock().unwrap().app.clone();
    if !request
        .uri()
        .path()
        .starts_with(&format!("/v1/apps/{app}/"))
    {
        return error(StatusCode::NOT_FOUND, "app not found");
    }
    next.run(request).await
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"))
}

async fn list(State(world): State<Shared>) -> Response {
    let mut w = world.lock().unwrap();
    w.settle();
    let all: Vec<Value> = w.machines.iter().map(|m| w.json(m)).collect();
    Json(all).into_response()
}

async fn show(State(world): State<Shared>, Path((_, id)): Path<(String, String)>) -> Response {
    let mut w = world.lock().unwrap();
    match w.find(&id) {
        Some(at) => Json(w.json(&w.machines[at])).into_response(),
        None => not_found(),
    }
}

async fn create(State(world): State<Shared>, Json(body): Json<Value>) -> Response {
    let config = body.get("config").cloned().unwrap_or(Value::Null);
    if config.get("image").and_then(Value::as_str).is_none() {
        return error(StatusCode::BAD_REQUEST, "invalid config: image is required");
    }
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    let region = body.get("region").and_then(Value::as_str).unwrap_or("ord");
    let mut w = world.lock().unwrap();
    let id = w.insert(name, region, config);
    match w.find(&id) {
        Some(at) => Json(w.json(&w.machines[at])).into_response(),
        None => not_found(),
    }
}

async fn destroy(
    State(world): State<Shared>,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().unwrap();
    let state = match w.find(&id) {
        Some(at) => w.machines[at].state.clone(),
        None => return not_found(),
    };
    let force = q.get("force").is_some_and(|f| f == "true");
    if !force && !matches!(state.as_str(), "stopped" | "created" | "suspended") {
        return error(
            StatusCode::PRECONDITION_FAILED,
            &format!("unable to destroy machine, not currently stopped or suspended: '{state}'"),
        );
    }
    w.machines.retain(|m| m.id != id);
    ok()
}

async fn act(
    State(world): State<Shared>,
    Path((_, id, verb)): Path<(String, String, String)>,
) -> Response {
    let mut w = world.lock().unwrap();
    let state = match w.find(&id) {
        Some(at) => w.machines[at].state.clone(),
        None => return not_found(),
    };
    let refuse = || {
        error(
            StatusCode::PRECONDITION_FAILED,
            &format!("unable to {verb} machine from current state: '{state}'"),
        )
    };
    match verb.as_str() {
        "restart" if state == "started" => w.transition(&id, "starting", "started"),
        "stop" if matches!(state.as_str(), "started" | "starting") => {
            w.transition(&id, "stopping", "stopped")
        }
        "start" if matches!(state.as_str(), "stopped" | "suspended" | "created") => {
            w.transition(&id, "starting", "started");
            return Json(json!({"previous_state": state, "migrated": false, "new_host": ""}))
                .into_response();
        }
        "restart" | "stop" | "start" => return refuse(),
        _ => return error(StatusCode::NOT_FOUND, "not found"),
    }
    ok()
}

/// `GET .../wait?state=S&timeout=N`: 200 once the machine is in S, 408
/// after N seconds (1 to 60).
async fn wait(
    State(world): State<Shared>,
    Path((_, id, verb)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if verb != "wait" {
        return error(StatusCode::NOT_FOUND, "not found");
    }
    let wanted = q.get("state").cloned().unwrap_or_else(|| "started".into());
    let secs = match q.get("timeout").map(|t| t.parse::<u64>()) {
        None => 60,
        Some(Ok(t)) if (1..=60).contains(&t) => t,
        Some(_) => return error(StatusCode::BAD_REQUEST, "timeout must be 1 to 60 seconds"),
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let next = {
            let mut w = world.lock().unwrap();
            let m = match w.find(&id) {
                Some(at) => &w.machines[at],
                None => return not_found(),
            };
            if m.state == wanted {
                return ok();
            }
            m.settles.map_or(deadline, |(at, _)| at.min(deadline))
        };
        if Instant::now() >= deadline {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("deadline_exceeded: machine did not reach state {wanted}"),
            );
        }
        // allow-sleep: until the next transition (or the deadline), computed, not polled
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
    }
}
