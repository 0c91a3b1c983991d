//! Credential injection, its own stage after inspection: on a route with `auth`, every
//! credential the client sent (`Authorization`, `Proxy-Authorization`, cookies, the route's
//! own header — placeholders included) is stripped and the real secret is inserted, marked
//! sensitive. Only over TLS, and never for `TRACE` (which would echo it back).
//!
//! The real value lives only in the sidecar's memory ([`Secrets`]); nothing here logs it.
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;

use crate::policy::{Deny, DenyReason, Route};
use crate::server::Secrets;

/// Strips client credentials and injects `route`'s real one. A route without `auth` is left
/// untouched.
pub fn inject(
    route: &Route,
    tls: bool,
    method: &Method,
    headers: &mut HeaderMap,
    secrets: &Secrets,
) -> Result<(), Deny> {
    let Some(auth) = route.auth.as_ref() else {
        return Ok(());
    };
    if !tls {
        return Err(Deny::new(
            DenyReason::BadRequest,
            "credentialed route is only served over https",
        ));
    }
    if method == Method::TRACE {
        return Err(Deny::new(
            DenyReason::Method,
            "TRACE is refused on a credentialed route",
        ));
    }
    let Some(value) = secrets.get(&auth.secret) else {
        return Err(Deny::new(
            DenyReason::Upstream,
            format!(
                "credential {} was not delivered to the sidecar",
                auth.secret
            ),
        ));
    };
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::COOKIE);
    let (name, raw) = match (&auth.header, &auth.scheme) {
        (Some(name), _) => (name.to_ascii_lowercase(), value.to_string()),
        (None, Some(scheme)) => ("authorization".to_string(), format!("{scheme} {value}")),
        (None, None) => ("authorization".to_string(), format!("Bearer {value}")),
    };
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Deny::new(DenyReason::BadRequest, "invalid auth header name"))?;
    headers.remove(&name);
    let mut v = HeaderValue::from_str(&raw).map_err(|_| {
        Deny::new(
            DenyReason::BadRequest,
            format!("credential {} is not a valid header value", auth.secret),
        )
    })?;
    v.set_sensitive(true);
    headers.insert(name, v);
    // A compressed response could hide a reflected credential from the response scan's
    // cheap pass: ask for identity (the scan still decodes what comes compressed anyway).
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    Ok(())
}
