//! Finding gRPC's verdict on a call: whether a response is gRPC at all,
//! and whether its headers or trailers say `UNAUTHENTICATED`.

use http::header::{HeaderMap, HeaderName, CONTENT_TYPE};

pub(super) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether `headers` say `content-type: application/grpc`, alone or with a
/// suffix (`+proto`, `; charset=...`), in any case.
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Whether `headers` (a response's, or its trailers) carry
/// `grpc-status: 16`, `UNAUTHENTICATED`.
pub(super) fn is_unauthenticated(headers: &HeaderMap) -> bool {
    headers
        .get(GRPC_STATUS)
        .is_some_and(|status| status.as_bytes() == b"16")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        let grpc = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_grpc(&headers)
        };
        assert!(grpc("application/grpc"));
        assert!(grpc("application/grpc+proto"));
        assert!(grpc("Application/GRPC; charset=utf-8"));
        assert!(!grpc("application/grpc-web"));
        assert!(!grpc("application/grpcx"));
        assert!(!grpc("application/json"));
        assert!(!grpc("application/grp"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn only_status_16_is_unauthenticated() {
        let status = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_STATUS, value.parse().unwrap());
            is_unauthenticated(&headers)
        };
        assert!(status("16"));
        for other in ["0", "7", "1", "160", "6"] {
            assert!(!status(other), "{other}");
        }
        assert!(!is_unauthenticated(&HeaderMap::new()));
    }
}
