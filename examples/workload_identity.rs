//! Tokens without shared secrets, against the examples' local mock backend:
//!
//! 1. `FileToken`: a token file kept fresh by someone else (a Vault agent
//!    sink, a Kubernetes projected service-account token). When the backend
//!    revokes the token, the 401 makes the next request read the file again.
//! 2. `ClientCredentials` with a client assertion read from a federated
//!    token file (`FileAssertion`), kept fresh by the kubelet's symlink
//!    swap, and read again on every token request.
//!
//! ```text
//! cargo run --example workload_identity
//! ```
//!
//! The mock backend does not verify assertions; `tests/private_key_jwt.rs`
//! runs `private_key_jwt` against a real server (oidc-provider).

mod support;

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};
use tower_bearer::oauth2::{ClientCredentials, FileAssertion};
use tower_bearer::{BearerAuthLayer, FileToken, RetryOnUnauthorized};

use support::Backend;

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(600)).await?;
    let dir = std::env::temp_dir().join(format!("tower-bearer-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&backend, &dir).await;
    std::fs::remove_dir_all(&dir)?;
    result
}

async fn run(backend: &Backend, dir: &Path) -> Result<(), BoxError> {
    // ===== 1. a token file =====
    // Stands in for a Vault agent: writes a token to its sink file.
    let sink = dir.join("vault-token");
    let agent = |sink: PathBuf| async move {
        let token = support::fetch_token(support::client(), backend.token_url()).await?;
        write_atomically(&sink, token.secret())?;
        Ok::<_, BoxError>(())
    };
    agent(sink.clone()).await?;

    let client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::new(FileToken::new(&sink)))
        .service(support::client());
    let status = call(&client, backend.protected_url()).await?;
    println!("file token: {status}");
    expect(status, StatusCode::OK)?;

    // The backend revokes every token and the agent writes a new one: the
    // 401 evicts the old token, and the retry reads the file again.
    backend.revoke_all();
    agent(sink.clone()).await?;
    let status = call(&client, backend.protected_url()).await?;
    println!("file token after revocation and rotation: {status}");
    expect(status, StatusCode::OK)?;

    // ===== 2. a federated token as the client assertion =====
    let projected = dir.join("projected");
    std::fs::create_dir_all(&projected)?;
    kubelet_write(&projected, 1, "eyJhbGciOiJSUzI1NiJ9.federated-1.c2ln")?;
    let source = ClientCredentials::try_new(backend.token_url().to_string(), "my-app", "")?
        .client_assertion(FileAssertion::new(projected.join("token")));
    println!("source: {source:?}");
    let client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::new(source))
        .service(support::client());
    let status = call(&client, backend.protected_url()).await?;
    println!("client assertion: {status}");
    expect(status, StatusCode::OK)?;

    // The kubelet rotates the federated token; the next token request sends
    // the new one.
    kubelet_write(&projected, 2, "eyJhbGciOiJSUzI1NiJ9.federated-2.c2ln")?;
    backend.revoke_all();
    let status = call(&client, backend.protected_url()).await?;
    println!("client assertion after rotation: {status}");
    expect(status, StatusCode::OK)?;
    println!("token requests: {}", backend.fetch_count());
    Ok(())
}

/// A new file renamed over the old one.
fn write_atomically(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(tmp, path)
}

/// The kubelet's atomic writer: `token -> ..data/token`, `..data` a symlink
/// to a timestamped directory, switched with a rename.
fn kubelet_write(dir: &Path, version: u32, content: &str) -> std::io::Result<()> {
    let timestamped = format!("..2026_11_27_{version}");
    std::fs::create_dir(dir.join(&timestamped))?;
    std::fs::write(dir.join(&timestamped).join("token"), content)?;
    std::os::unix::fs::symlink(&timestamped, dir.join("..data_tmp"))?;
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
    if version == 1 {
        std::os::unix::fs::symlink("..data/token", dir.join("token"))?;
    }
    Ok(())
}

async fn call<S>(client: &S, uri: Uri) -> Result<StatusCode, BoxError>
where
    S: tower::Service<Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>
        + Clone,
    S::Error: Into<BoxError>,
{
    let request = Request::get(uri).body(Full::default())?;
    let response = client.clone().oneshot(request).await.map_err(Into::into)?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

fn expect(status: StatusCode, expected: StatusCode) -> Result<(), BoxError> {
    if status == expected {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {status}").into())
    }
}
