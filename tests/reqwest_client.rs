//! An OAuth2 source sends its token requests through the application's own
//! `reqwest::Client` (the `reqwest` feature): its settings apply.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower_bearer::oauth2::{ClientCredentials, RefreshToken, TokenExchange};
use tower_bearer::{Token, TokenCache};

/// A token endpoint that answers each request with a token named after the
/// `user-agent` it was sent with.
async fn token_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            let agent = head
                .lines()
                .find_map(|line| line.strip_prefix("user-agent: "))
                .unwrap_or("none")
                .trim()
                .replace('/', "-");
            let body = format!(
                r#"{{"access_token":"agent-{agent}","token_type":"Bearer","expires_in":60}}"#
            );
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    url
}

#[tokio::test]
async fn every_oauth2_source_sends_through_the_applications_reqwest_client() {
    let url = token_endpoint().await;
    let http = reqwest::Client::builder()
        .user_agent("my-app/1.0")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let source = ClientCredentials::try_new(&url, "id", "secret")
        .unwrap()
        .reqwest_client(http.clone());
    let token = TokenCache::new(source).token().await.unwrap();
    assert_eq!(token.secret(), "agent-my-app-1.0");

    let subject = || async { Ok::<_, std::io::Error>(Token::new("subject")) };
    let exchange = TokenExchange::try_new(&url, "id", "", subject)
        .unwrap()
        .reqwest_client(http.clone());
    let token = TokenCache::new(exchange).token().await.unwrap();
    assert_eq!(token.secret(), "agent-my-app-1.0");

    let refresh = RefreshToken::try_new(&url, "id", "secret", "rt-0")
        .unwrap()
        .reqwest_client(http);
    let token = TokenCache::new(refresh).token().await.unwrap();
    assert_eq!(token.secret(), "agent-my-app-1.0");

    // The built-in client sends no user-agent.
    let source = ClientCredentials::try_new(&url, "id", "secret").unwrap();
    let token = TokenCache::new(source).token().await.unwrap();
    assert_eq!(token.secret(), "agent-none");
}
