//! Did an etcd server refuse our client certificate?
//!
//! With TLS 1.3 the client finishes its handshake before the server has checked the
//! client certificate. A server that refuses it sends a fatal alert and closes, but a
//! gRPC client has already written its first request by then, and that write often turns
//! the close into a reset that discards the alert: the failure looks like any broken
//! connection ("broken pipe", "connection closed"), which `connect` would retry until its
//! timeout. This probe opens one TLS connection with the same material, writes nothing
//! and reads: a server that refuses says so with its alert, one that accepts sends its
//! HTTP/2 settings.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::client::TlsConfig;

/// `Some(reason)` when the server at `endpoint` (`https://host:port`) refuses the TLS
/// material in `tls`; `None` when it accepts it or the probe cannot tell within `within`.
pub(crate) async fn refusal(endpoint: &str, tls: &TlsConfig, within: Duration) -> Option<String> {
    tokio::time::timeout(within, probe(endpoint, tls)).await.ok().flatten()
}

async fn probe(endpoint: &str, tls: &TlsConfig) -> Option<String> {
    let authority = endpoint.strip_prefix("https://")?.trim_end_matches('/');
    let (host, _) = authority.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = tls.domain.clone().unwrap_or_else(|| host.to_string());
    let name = ServerName::try_from(name).ok()?;
    let config = Arc::new(client_config(tls)?);
    let tcp = tokio::net::TcpStream::connect(authority).await.ok()?;
    let mut stream = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
        Ok(s) => s,
        Err(e) => return refused(&e),
    };
    let mut buf = [0u8; 64];
    match stream.read(&mut buf).await {
        Err(e) => refused(&e).map(|why| format!("the server refused the client certificate: {why}")),
        // Accepted (the server's HTTP/2 settings), or closed without saying why.
        Ok(_) => None,
    }
}

fn refused(e: &std::io::Error) -> Option<String> {
    let text = e.to_string();
    ["received fatal alert", "invalid peer certificate", "peer sent no certificates", "certificate required"]
        .iter()
        .any(|m| text.contains(m))
        .then_some(text)
}

fn client_config(tls: &TlsConfig) -> Option<ClientConfig> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().ok()?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(tls.ca_pem.as_deref()?) {
        roots.add(cert.ok()?).ok()?;
    }
    let builder = builder.with_root_certificates(roots);
    let mut config = match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().ok()?;
            let key = PrivateKeyDer::from_pem_slice(key).ok()?;
            builder.with_client_auth_cert(chain, key).ok()?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Some(config)
}
