//! The S3 endpoint beside the native API (`--s3-listen`, `[s3]`): [`larder_s3`] over the
//! served store, with access keys scoped like bearer tokens by [`auth::check_scope`].

use std::sync::Arc;

use larder::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::auth::{self, Access};
use crate::config::{Config, S3KeyConfig};
use crate::ServerError;

/// The configured access keys, as [`larder_s3::Grants`].
struct KeyGrants(Vec<S3KeyConfig>);

impl KeyGrants {
    fn find(&self, access_key: &str) -> Option<&S3KeyConfig> {
        self.0.iter().find(|k| k.access_key == access_key)
    }
}

impl larder_s3::Grants for KeyGrants {
    fn secret(&self, access_key: &str) -> Option<String> {
        self.find(access_key).map(|k| k.secret_key.clone())
    }

    fn check(
        &self,
        access_key: &str,
        access: larder_s3::Access,
        target: &str,
    ) -> Result<(), String> {
        let key = self.find(access_key).ok_or("unknown access key")?;
        let access = match access {
            larder_s3::Access::Read => Access::Read,
            larder_s3::Access::List => Access::List,
            larder_s3::Access::Write => Access::Write,
        };
        auth::check_scope(key.scope, &key.prefix, access, target)
    }
}

/// A running S3 listener.
pub struct S3Handle {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl S3Handle {
    /// Stops accepting, lets requests in flight finish, and waits for that.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

/// Starts the S3 listener when the configuration has one.
pub async fn start(
    config: &Config,
    store: Arc<dyn Store>,
) -> Result<Option<S3Handle>, ServerError> {
    let Some(s3) = &config.s3 else {
        return Ok(None);
    };
    let Some(listen) = s3.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(listen).await?;
    let options = larder_s3::S3Options {
        grants: (!s3.keys.is_empty())
            .then(|| Arc::new(KeyGrants(s3.keys.clone())) as Arc<dyn larder_s3::Grants>),
        max_object_size: Some(config.max_object_size),
        spool_dir: s3.spool_dir.clone(),
        request_timeout: Some(config.request_timeout),
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        keys = s3.keys.len(),
        "larder serving S3"
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(larder_s3::serve(listener, store, options, async {
        let _ = stopped.await;
    }));
    Ok(Some(S3Handle { stop, task }))
}
