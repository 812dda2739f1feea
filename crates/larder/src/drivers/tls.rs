//! The process's rustls crypto provider, for the clients that take it from rustls's defaults.
//!
//! rustls chooses its process-wide default provider from its cargo features and chooses none
//! when more than one is compiled in: Larder's own TLS uses ring, and `object_store` (the s3 and
//! azure drivers) brings aws-lc-rs. The Redis and NATS clients build their TLS settings with
//! `ClientConfig::builder()`, which panics without a default, so every place that opens one
//! of them calls [`ensure_crypto_provider`] first.

/// Installs ring as the process's default rustls provider, unless one is installed already
/// (an application's own choice is kept).
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err: another thread installed one in between, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
