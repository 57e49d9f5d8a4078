//! Rate limits (per IP, per principal) on Redis, and in-process while Redis is down.

use futures::future::join_all;

use crate::helpers::redis::PrivateRedis;
use crate::helpers::{TestApp, app, oidc};

/// 100 concurrent requests from one client; the statuses that came back.
async fn burst(app: &TestApp, token: &str) -> Vec<(u16, Option<String>)> {
    let requests = (0..100).map(|_| {
        let request = app.client.get(app.url("/v1/me")).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (response.status().as_u16(), retry_after)
        }
    });
    join_all(requests).await
}

fn assert_limited(results: &[(u16, Option<String>)]) {
    let limited: Vec<_> = results.iter().filter(|(s, _)| *s == 429).collect();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert!(!limited.is_empty(), "no 429 in {results:?}");
    assert!(ok >= 1, "nothing got through: {results:?}");
    for (_, retry_after) in limited {
        let secs: u64 = retry_after
            .as_ref()
            .expect("Retry-After on 429")
            .parse()
            .unwrap();
        assert!(secs >= 1);
    }
}

#[tokio::test]
async fn a_burst_from_one_client_is_limited_on_redis_and_without_it() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = app().settings(move |s| s.set_redis_url(url)).spawn().await;
    let token = oidc::access_token("agent-a1").await;

    assert_limited(&burst(&app, &token).await);
    // The counts really live in this test's Redis (isolated by its key prefix).
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}rl:*", app.state.settings.redis.key_prefix))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "no rate-limit keys in Redis");
    assert!(
        keys.iter().all(|k| !k.contains("127.0.0.1")),
        "raw IP in a key: {keys:?}"
    );

    redis.stop();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_limited(&burst(&app, &token).await);
    let degraded = app
        .logs
        .text()
        .matches("rate limiting in-process until it returns")
        .count();
    assert_eq!(degraded, 1, "the fallback is logged once, not per request");
}

#[tokio::test]
async fn the_per_principal_limit_applies_across_addresses() {
    let app = app()
        .settings(|s| {
            s.rate_limit.api_per_ip = 10_000;
            s.rate_limit.api_per_principal = 20;
        })
        .spawn()
        .await;
    let token = oidc::access_token("agent-a2").await;
    assert_limited(&burst(&app, &token).await);
}

#[tokio::test]
async fn operations_routes_are_never_limited() {
    let app = app()
        .settings(|s| s.rate_limit.api_per_ip = 1)
        .spawn()
        .await;
    let results = join_all((0..30).map(|_| app.client.get(app.url("/healthz")).send())).await;
    assert!(results.into_iter().all(|r| r.unwrap().status() == 200));
}

/// Read from `stream` until the server closes it; how long that took.
async fn closed_after(mut stream: tokio::net::TcpStream) -> std::time::Duration {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .expect("the server kept the connection open");
    started.elapsed()
}

/// Defect: the direct listener set no header-read timeout, so a client sending a request
/// head one byte at a time (slowloris) or idling on a keep-alive connection held a socket
/// and a task for as long as it liked.
#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = app()
        .settings(|s| s.server.header_read_timeout_secs = 1)
        .spawn()
        .await;
    // A connection that never says anything (before the protocol is even known).
    let silent = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let took = closed_after(silent).await;
    assert!(took < std::time::Duration::from_secs(4), "{took:?}");
    // Half of an HTTP/2 preface: still closed.
    let mut h2 = tokio::net::TcpStream::connect(app.address).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let took = closed_after(h2).await;
    assert!(took < std::time::Duration::from_secs(4), "{took:?}");

    // A head that never ends.
    let mut slow = tokio::net::TcpStream::connect(app.address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let took = closed_after(slow).await;
    assert!(took < std::time::Duration::from_secs(4), "{took:?}");

    // A keep-alive connection left idle after one request.
    let mut idle = tokio::net::TcpStream::connect(app.address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let took = closed_after(idle).await;
    assert!(took < std::time::Duration::from_secs(4), "{took:?}");

    // The operations listener too.
    let mut slow = tokio::net::TcpStream::connect(app.admin_address)
        .await
        .unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    let took = closed_after(slow).await;
    assert!(took < std::time::Duration::from_secs(4), "{took:?}");
}
