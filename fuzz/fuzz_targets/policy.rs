//! The policy loader must never panic: any text is either a valid policy or a
//! `PolicyError`. Accepted policies must decide without panicking too.
#![no_main]

use bottle_proxy::canon::canonical_host;
use bottle_proxy::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::from_toml_str(text, "fuzz.toml") {
        Ok(policy) => {
            let headers = http::HeaderMap::new();
            for name in [
                "api.github.com",
                "a.b.example.com",
                "127.0.0.1",
                "[::1]",
                "10.0.0.1",
            ] {
                let host = canonical_host(name).expect("test hosts are valid");
                for port in [80, 443, 8000] {
                    if let Ok(route) = policy.decide(&host, port) {
                        let _ = route.check_request("GET", "/a/../b?x", &headers);
                        let _ = route.check_request("POST", "/repos/acme/x", &headers);
                    }
                }
            }
            for route in &policy.routes {
                let _ = route.allows_private("172.17.0.1".parse().expect("valid"));
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.toml"), "{shown}");
        }
    }
});
