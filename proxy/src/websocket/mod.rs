//! WebSocket proxying that keeps the route's rules and DLP in force after a `101`.
//!
//! A generic `Upgrade` answered `101` turns an HTTP connection into an opaque
//! byte stream. Splicing that stream let a client send anything after the
//! handshake, including plain HTTP requests the route would have refused
//! (`Upgrade: h2c` or `foo` followed by `DELETE /private …`), and let secrets
//! leave inside WebSocket frames unscanned. This module closes both holes:
//!
//! * [`handshake`] lets through only a well-formed RFC 6455 upgrade whose
//!   `Upgrade` header is exactly `websocket`; every other token is refused
//!   before anything reaches the upstream. It also strips
//!   `Sec-WebSocket-Extensions` from the upstream request and refuses a `101`
//!   that negotiates one: with `permessage-deflate` the scanner would see
//!   compressed payloads, so the proxy never offers it.
//! * [`relay`] then *parses* both directions as WebSocket frames (with
//!   `tungstenite`) instead of splicing bytes: bytes that are not valid masked
//!   client frames close the connection (1002) without reaching the upstream,
//!   RSV1 ("compressed") frames are refused, fragments are reassembled, and
//!   every complete message is handed to a [`MessageScanner`] *before* any of
//!   it is forwarded.
pub mod handshake;
pub mod relay;

pub use handshake::{
    accept_key, check_request, check_response, prepare_upstream_headers, ClientHandshake,
    UpgradeRefusal,
};
pub use relay::{relay, Blocked, Direction, End, MessageScanner, RelayLimits, RelayOutcome};
