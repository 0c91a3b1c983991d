//! The per-request context: what is known about one request or tunnel so far (method,
//! target, route, start time), and the one place a [`Deny`] becomes a response and an audit
//! record.
use std::sync::Arc;
use std::time::Instant;

use http::Response;

use crate::audit::{timestamp, AuditRecord, Decision};
use crate::canon::{redact_query, Host};
use crate::deny::deny_response_with_status;
use crate::policy::{Deny, DenyReason, HostPattern, Route};
use crate::server::body::ProxyBody;
use crate::server::Inner;

/// How the target host may be shown in audit records and deny bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostShown {
    /// As decided (canonical form).
    Plain,
    /// The name itself was refused (a secret or a random-looking label in it): only the
    /// route's wildcard suffix, if any, is shown.
    Redacted,
}

/// One request's (or one CONNECT's) context, carried through every stage.
#[derive(Clone)]
pub(crate) struct Exchange {
    /// The proxy.
    pub inner: Arc<Inner>,
    /// Request method, sanitised (`CONNECT` for tunnels).
    pub method: String,
    /// The decided target host, once parsed.
    pub host: Option<Host>,
    /// How `host` may be shown.
    pub shown: HostShown,
    /// The wildcard suffix of the matched route (for a redacted host).
    pub suffix: Option<String>,
    /// Target port (0 until parsed).
    pub port: u16,
    /// Path and query as logged (query values are dropped when recorded).
    pub path: String,
    /// The selected route's id.
    pub route_id: Option<Arc<str>>,
    /// When the request arrived.
    pub started: Instant,
}

impl Exchange {
    /// A context for a request whose target is not parsed yet.
    pub fn new(inner: Arc<Inner>, method: &str) -> Self {
        Exchange {
            inner,
            method: sanitize_method(method),
            host: None,
            shown: HostShown::Plain,
            suffix: None,
            port: 0,
            path: String::new(),
            route_id: None,
            started: Instant::now(),
        }
    }

    /// Sets the parsed target.
    pub fn target(&mut self, host: Host, port: u16) {
        self.host = Some(host);
        self.port = port;
    }

    /// Sets the selected route.
    pub fn route(&mut self, route: &Route) {
        self.route_id = Some(Arc::from(route.id.as_str()));
        if let HostPattern::Wildcard(s) = &route.host {
            self.suffix = Some(s.clone());
        }
    }

    /// The host as it may be shown: canonical, or redacted when the name itself was refused.
    pub fn shown_host(&self) -> String {
        match (&self.host, self.shown) {
            (None, _) => "(request target)".to_owned(),
            (Some(h), HostShown::Plain) => h.to_string(),
            (Some(_), HostShown::Redacted) => match &self.suffix {
                Some(s) => format!("[redacted].{s}"),
                None => "[redacted]".to_owned(),
            },
        }
    }

    /// The audit record of this exchange with `deny` (or an allow) and byte counts.
    pub fn record(&self, deny: Option<&Deny>, bytes: (u64, u64)) -> AuditRecord {
        // A DLP block may have found the secret in the path itself: never log it.
        let path = match deny {
            Some(d) if d.reason == DenyReason::Dlp => "[redacted: dlp]".to_owned(),
            _ => redact_query(&self.path),
        };
        AuditRecord {
            ts: timestamp(),
            method: self.method.clone(),
            host: if self.host.is_some() {
                self.shown_host()
            } else {
                String::new()
            },
            port: self.port,
            path,
            route: self.route_id.as_deref().map(str::to_owned),
            decision: if deny.is_some() {
                Decision::Deny
            } else {
                Decision::Allow
            },
            reason: deny.map(|d| d.reason.code()).unwrap_or("ok"),
            rule: deny.and_then(|d| d.rule.clone()),
            location: deny.and_then(|d| d.location.clone()),
            bytes_up: bytes.0,
            bytes_down: bytes.1,
            duration_ms: self.started.elapsed().as_millis() as u64,
            client: None,
        }
    }

    /// Records `deny` in the audit log without building a response (tunnel-level refusals
    /// that have no HTTP exchange left to answer).
    pub fn audit_deny(&self, deny: &Deny) {
        self.inner.audit.record(self.record(Some(deny), (0, 0)));
    }

    /// Refuses: records the deny and builds the response (`X-Bottle-Deny`, one-line body)
    /// with the reason's status.
    pub fn refuse(&self, deny: Deny) -> Response<ProxyBody> {
        let status = deny.reason.status();
        self.refuse_with_status(deny, status)
    }

    /// Like [`Exchange::refuse`] with an explicit status (431 for an oversized head).
    pub fn refuse_with_status(&self, deny: Deny, status: u16) -> Response<ProxyBody> {
        self.audit_deny(&deny);
        let mut resp = deny_response_with_status(&self.shown_host(), &deny, status);
        if self.method == "HEAD" {
            // A HEAD response has no body (HTTP/2 refuses DATA on it).
            *resp.body_mut() = crate::server::body::empty();
            resp.headers_mut().remove(http::header::CONTENT_LENGTH);
        }
        resp
    }
}

/// A method token safe to log: alphanumerics and `-`, at most 16 characters.
fn sanitize_method(m: &str) -> String {
    m.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(16)
        .collect()
}
