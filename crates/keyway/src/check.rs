//! `keyway check`: what would be served, and every problem, without serving.

use std::fmt::Write;

use keyway_compile::Compiled;
use keyway_sources::Loaded;
use keyway_store::{Action, Auth, Target};

/// Renders the listeners, routes and attached policies of a compiled config, then every
/// status line. Returns the text and whether anything is wrong.
pub fn render(loaded: &Loaded, compiled: &Compiled) -> (String, bool) {
    let mut out = String::new();
    for w in &loaded.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for (port, p) in &compiled.config.ports {
        for l in &p.listeners {
            let _ = writeln!(
                out,
                "Gateway {} listener {} port {port} hostname {}",
                l.gateway, l.name, l.hostname
            );
            for vh in &l.virtual_hosts {
                let _ = writeln!(out, "  host {}", vh.hostname);
                for r in &vh.routes {
                    let m = serde_json::to_value(&r.matcher).unwrap_or_default();
                    let mut cond = m["path"].as_str().unwrap_or("").to_string();
                    if let Some(method) = m["method"].as_str() {
                        let _ = write!(cond, " {method}");
                    }
                    if !r.matcher.headers.is_empty() {
                        let _ = write!(cond, " +{} header match(es)", r.matcher.headers.len());
                    }
                    if !r.matcher.query.is_empty() {
                        let _ = write!(cond, " +{} query match(es)", r.matcher.query.len());
                    }
                    let action = match &*r.action {
                        Action::Forward(f) => f
                            .backends
                            .iter()
                            .map(|b| match &b.target {
                                Target::Upstream(u) => format!(
                                    "{} ({} endpoints, weight {})",
                                    u.name,
                                    u.endpoints.len(),
                                    b.weight
                                ),
                                Target::Invalid(why) => format!("500 ({why})"),
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                        Action::Redirect(rd) => format!("redirect {}", rd.status.as_u16()),
                        Action::Direct { status, .. } => format!("direct {}", status.as_u16()),
                    };
                    let auth = match &r.auth {
                        Auth::None => "no auth".to_string(),
                        Auth::ApiKey { policy } => format!(
                            "api key auth by {} ({} keys)",
                            policy.name,
                            policy.credentials.len()
                        ),
                        Auth::Invalid { policy } => {
                            format!("INVALID policy {} (answers 500)", policy)
                        }
                    };
                    let rule = r
                        .rule_name
                        .as_deref()
                        .map(|n| format!(" rule {n}"))
                        .unwrap_or_else(|| format!(" rule {}", r.rule));
                    let _ = writeln!(
                        out,
                        "    HTTPRoute {}{rule}: {cond} -> {action} [{auth}]",
                        r.route
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "\nStatus:");
    for line in compiled.report.lines() {
        let _ = writeln!(out, "  {line}");
    }
    let problems = compiled.report.problems();
    if problems.is_empty() {
        let _ = writeln!(out, "\nno problems found");
    } else {
        let _ = writeln!(out, "\n{} problem(s):", problems.len());
        for p in &problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    (out, !problems.is_empty())
}
