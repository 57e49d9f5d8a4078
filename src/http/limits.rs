//! Per-IP rate limits by route group. Operations routes (/healthz, /readyz, /metrics) are
//! exempt: load balancers and Prometheus must never be throttled into marking us down.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::state::AppState;

/// The rate-limit group of a path, with its per-IP limit; `None` is exempt.
fn group(state: &AppState, path: &str) -> Option<(&'static str, u32)> {
    let limits = &state.settings.rate_limit;
    if path.starts_with("/v1/public/") || path.starts_with("/u/") {
        Some(("public:ip", limits.public_per_ip))
    } else if path.starts_with("/auth/") {
        Some(("auth:ip", limits.auth_per_ip))
    } else if path.starts_with("/v1/") {
        Some(("api:ip", limits.api_per_ip))
    } else {
        None
    }
}

/// The client's address: the peer, or — when the peer is a trusted reverse proxy — the
/// right-most address in X-Forwarded-For that is not itself a trusted proxy.
pub fn client_ip(request: &Request, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    forwarded
        .rsplit(',')
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .or(Some(peer))
}

/// The rate-limit key of a client address: IPv6 clients are counted by their /64, which one
/// subscriber usually holds whole (a key per address would give each a fresh budget).
pub fn rate_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The upload-link token of a borrower route, if the path carries one.
fn link_token(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/v1/public/upload-links/")
        .or_else(|| path.strip_prefix("/u/"))?;
    rest.split('/').next().filter(|t| !t.is_empty())
}

pub async fn per_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some((bucket, limit)) = group(&state, request.uri().path()) else {
        return next.run(request).await;
    };
    // A link is limited on its own too, whichever addresses use it (a token shared or
    // leaked across many clients). Counted by the token's hash: tokens never reach Redis.
    if let Some(token) = link_token(request.uri().path()) {
        let id: String = crate::crypto::token_hash(token)[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Err(retry_after_secs) = state
            .rate_limiter
            .check(
                "public:token",
                &id,
                state.settings.rate_limit.public_per_token,
            )
            .await
        {
            return AppError::RateLimited { retry_after_secs }.into_response();
        }
    }
    let Some(ip) = client_ip(&request, &state.settings.rate_limit.trusted_proxies) else {
        return next.run(request).await;
    };
    match state.rate_limiter.check(bucket, &rate_key(ip), limit).await {
        Ok(()) => next.run(request).await,
        Err(retry_after_secs) => AppError::RateLimited { retry_after_secs }.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        use super::rate_key;
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(a), rate_key(b));
        assert_ne!(rate_key(a), rate_key(c));
        assert_eq!(rate_key("10.0.0.1".parse().unwrap()), "10.0.0.1");
    }

    #[test]
    fn link_tokens_are_found_in_borrower_paths_only() {
        use super::link_token;
        assert_eq!(link_token("/u/abc"), Some("abc"));
        assert_eq!(link_token("/v1/public/upload-links/abc/files"), Some("abc"));
        assert_eq!(link_token("/v1/public/upload-links/"), None);
        assert_eq!(link_token("/v1/loans/abc"), None);
        assert_eq!(link_token("/assets/upload.js"), None);
    }
}
