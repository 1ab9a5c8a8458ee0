//! The Fly.io deployment files (`fly/*.fly.toml`, `fly/Dockerfile`) checked
//! against the binaries, so they cannot drift from the code: ports, PROXY
//! protocol handlers, checks, the release command and process groups,
//! kill signal and timeout against `portico-edge --print-defaults`, every
//! `PORTICO_EDGE_*` variable against the edge's `--help`, the control
//! plane's `[env]` through its real settings parser, and each image
//! target's ENTRYPOINT/CMD against what the multi-region rehearsal runs.

use portico_control_plane::settings::Settings;
use portico_e2e::cluster::binary;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use toml::{Table, Value};

fn repo_file(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fly_toml(name: &str) -> Table {
    toml::from_str(&repo_file(&format!("fly/{name}"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(binary(bin).unwrap())
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{bin} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn env(toml: &Table) -> HashMap<String, String> {
    toml["env"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn port_of(addr: &str) -> i64 {
    addr.parse::<std::net::SocketAddr>().unwrap().port().into()
}

fn seconds(v: &Value) -> i64 {
    let s = v.as_str().unwrap();
    s.strip_suffix('s').unwrap().parse().unwrap()
}

/// The `[[services]]` entry with this internal port.
fn service(toml: &Table, internal_port: i64) -> &Table {
    toml["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_table().unwrap())
        .find(|s| s["internal_port"].as_integer() == Some(internal_port))
        .unwrap_or_else(|| panic!("no service on internal port {internal_port}"))
}

/// `external port → (handlers, the whole port table)` of a service.
fn ports(service: &Table) -> HashMap<i64, (Vec<String>, Table)> {
    service["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p = p.as_table().unwrap();
            let handlers = p["handlers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_string())
                .collect();
            (p["port"].as_integer().unwrap(), (handlers, p.clone()))
        })
        .collect()
}

#[test]
fn the_edge_app_matches_the_edge_binary() {
    let fly = fly_toml("edge.fly.toml");
    let defaults: Table = toml::from_str(&run("portico-edge", &["--print-defaults"])).unwrap();
    let env = env(&fly);

    // Kill signal and timeout: the signal that drains, and longer than the drain.
    assert_eq!(fly["kill_signal"], defaults["shutdown_signal"]);
    let drain = defaults["grace_period_secs"].as_integer().unwrap()
        + defaults["shutdown_timeout_secs"].as_integer().unwrap();
    assert!(
        seconds(&fly["kill_timeout"]) > drain,
        "kill_timeout must exceed the edge's {drain} s drain"
    );

    // Raw TCP on 80 and 443 with a PROXY v2 header, to the listeners the
    // edge is told to open, which expect that header.
    assert_eq!(env["PORTICO_EDGE_PROXY_PROTOCOL"], "v2");
    for (external, listener) in [(80, "PORTICO_EDGE_HTTP"), (443, "PORTICO_EDGE_HTTPS")] {
        let s = service(&fly, port_of(&env[listener]));
        assert_eq!(s["protocol"].as_str(), Some("tcp"));
        let ports = ports(s);
        assert_eq!(ports.len(), 1, "{listener}: one public port");
        let (handlers, port) = &ports[&external];
        assert_eq!(handlers, &["proxy_proto"], "no Fly TLS or HTTP handler");
        assert_eq!(port["proxy_proto_options"]["version"].as_str(), Some("v2"));
        assert!(
            !s.contains_key("http_checks"),
            "HTTP checks lack the header"
        );
    }
    assert_eq!(fly["services"].as_array().unwrap().len(), 2);

    // Checks go to the admin listener, on all interfaces so Fly reaches it.
    let admin = &env["PORTICO_EDGE_ADMIN"];
    assert!(admin.starts_with("[::]:"), "admin must listen on [::]");
    let checks = fly["checks"].as_table().unwrap();
    let mut paths: Vec<&str> = checks
        .values()
        .map(|c| {
            assert_eq!(c["port"].as_integer(), Some(port_of(admin)));
            c["path"].as_str().unwrap()
        })
        .collect();
    paths.sort();
    assert_eq!(paths, ["/healthz", "/readyz"]);

    // Every variable set is one the edge reads.
    let help = run("portico-edge", &["--help"]);
    for key in env.keys() {
        assert!(
            help.contains(&format!("[env: {key}")),
            "{key} is not an edge setting"
        );
    }
    assert_eq!(fly["build"]["build-target"].as_str(), Some("edge"));
}

#[test]
fn the_control_plane_app_matches_the_control_plane_binary() {
    let fly = fly_toml("control-plane.fly.toml");
    let edge = fly_toml("edge.fly.toml");
    let help = run("portico-control-plane", &["--help"]);
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let release = fly["deploy"]["release_command"].as_str().unwrap();
    assert_eq!(release, "migrate");
    assert!(subcommands.contains(&release), "{subcommands:?}");
    let processes = fly["processes"].as_table().unwrap();
    assert_eq!(processes["app"].as_str(), Some("serve"));
    assert_eq!(processes["worker"].as_str(), Some("worker"));
    for p in processes.values() {
        assert!(subcommands.contains(&p.as_str().unwrap()), "{p}");
    }
    assert_eq!(
        fly["kill_signal"].as_str(),
        Some("SIGTERM"),
        "what serve and worker stop on"
    );

    // The [env] through the real settings parser (secrets stand in).
    let mut vars = env(&fly);
    vars.insert("DATABASE_URL".into(), "postgres://db/portico".into());
    vars.insert("PORTICO_FLY_API_TOKEN".into(), "fm2_test".into());
    let settings = Settings::from_sources(vars).unwrap();
    assert!(!settings.run_migrations, "release_command migrates");
    let api = service(&fly, settings.listen.port().into());
    assert_eq!(
        api["processes"].as_array().unwrap()[0].as_str(),
        Some("app")
    );
    let ports = ports(api);
    assert_eq!(
        ports[&443].0,
        ["tls", "http"],
        "Fly terminates the API's TLS"
    );
    assert_eq!(ports[&80].1["force_https"].as_bool(), Some(true));
    assert!(api["min_machines_running"].as_integer().unwrap() >= 2);
    let mut paths: Vec<&str> = api["http_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/healthz", "/readyz"]);

    // The FlyMachines adapter probes the edges where the edge app listens.
    let fly_settings = settings.fly.expect("PORTICO_FLY_APP is set");
    assert_eq!(fly_settings.app, edge["app"].as_str().unwrap());
    let edge_env = env(&edge);
    assert_eq!(
        (
            i64::from(fly_settings.edge_ports.http),
            i64::from(fly_settings.edge_ports.https),
            i64::from(fly_settings.edge_ports.admin)
        ),
        (
            port_of(&edge_env["PORTICO_EDGE_HTTP"]),
            port_of(&edge_env["PORTICO_EDGE_HTTPS"]),
            port_of(&edge_env["PORTICO_EDGE_ADMIN"])
        )
    );
    assert_eq!(fly["build"]["build-target"].as_str(), Some("control-plane"));
}

/// `FROM … AS name` stages of the Dockerfile with their instructions.
fn stages(dockerfile: &str) -> HashMap<String, Vec<String>> {
    let mut stages = HashMap::new();
    let mut current: Option<String> = None;
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            current = line.split(" AS ").nth(1).map(|s| s.trim().to_string());
            if let Some(name) = &current {
                stages.insert(name.clone(), Vec::new());
            }
        } else if let Some(name) = &current
            && !line.is_empty()
            && !line.starts_with('#')
        {
            stages.get_mut(name).unwrap().push(line.to_string());
        }
    }
    stages
}

fn instruction(stage: &[String], keyword: &str) -> Option<Vec<String>> {
    stage
        .iter()
        .rfind(|l| l.starts_with(&format!("{keyword} ")))
        .map(|l| serde_json::from_str(&l[keyword.len() + 1..]).unwrap())
}

#[test]
fn each_image_runs_what_the_rehearsal_runs() {
    let stages = stages(&repo_file("fly/Dockerfile"));
    let rehearsal = repo_file("tests/rehearsal/regions.sh");
    for (target, fly) in [
        ("edge", "edge.fly.toml"),
        ("control-plane", "control-plane.fly.toml"),
    ] {
        let stage = &stages[target];
        assert_eq!(
            fly_toml(fly)["build"]["build-target"].as_str(),
            Some(target)
        );
        let user = stage.iter().rfind(|l| l.starts_with("USER ")).unwrap();
        assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
        assert!(stage.iter().all(|l| !l.starts_with("HEALTHCHECK")));
        let entrypoint = instruction(stage, "ENTRYPOINT").unwrap();
        let binary = entrypoint[0].rsplit('/').next().unwrap().to_string();
        assert_eq!(binary, format!("portico-{target}"));
        // The rehearsal starts the same binary with the same arguments.
        let cmd = instruction(stage, "CMD").unwrap_or_default();
        let mut argv = vec![binary];
        argv.extend(cmd);
        let line = argv.join(" ");
        assert!(
            rehearsal.contains(&format!("$BIN/{line} "))
                || rehearsal.contains(&format!("$BIN/{line}\n")),
            "the rehearsal does not run `{line}`"
        );
    }
    // The control plane's CMD is the `app` process.
    let cp = &stages["control-plane"];
    assert_eq!(instruction(cp, "CMD"), Some(vec!["serve".to_string()]));
}
