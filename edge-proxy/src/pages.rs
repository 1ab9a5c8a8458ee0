//! The edge's own responses: small branded HTML pages for unknown domains,
//! upstream failures and misdirected requests. Static strings, no templating
//! of request data (nothing a client sends is echoed back).

pub fn page(status: u16) -> (&'static str, &'static str) {
    match status {
        404 => (
            "Domain not configured",
            "This domain is not set up on Portico yet. If it is yours, add it in your dashboard and point its DNS at us.",
        ),
        421 => (
            "Misdirected request",
            "This connection was set up for a different hostname. Open a new connection for this one.",
        ),
        413 => (
            "Request too large",
            "The request body is larger than this site accepts.",
        ),
        502 => (
            "Bad gateway",
            "The site's server could not be reached. The site's owner has been told; please try again in a moment.",
        ),
        504 => (
            "Gateway timeout",
            "The site's server took too long to answer. Please try again in a moment.",
        ),
        _ => ("Error", "Something went wrong while handling this request."),
    }
}

pub fn html(status: u16) -> String {
    let (title, text) = page(status);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {title}</title>\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<style>body{{font:16px/1.5 system-ui,sans-serif;color:#1f2933;max-width:36rem;margin:15vh auto;padding:0 1rem}}\
h1{{font-size:1.5rem}}small{{color:#7b8794}}</style></head>\
<body><h1>{title}</h1><p>{text}</p><small>{status} · served by Portico</small></body></html>\n"
    )
}
