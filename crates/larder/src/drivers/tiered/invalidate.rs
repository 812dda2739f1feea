//! Cross-replica invalidation: a channel on which each write publishes its key.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::error::Result;
use crate::key::Key;

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `replica` wrote or deleted `key`; message number `seq` of that replica.
    Key {
        /// The publishing replica.
        replica: String,
        /// The publisher's message number, echoed in the acknowledgement.
        seq: u64,
        /// The key.
        key: Key,
    },
    /// A subscriber of `replica` has acted on its message `seq`.
    Ack {
        /// The replica that published the message.
        replica: String,
        /// The message number.
        seq: u64,
    },
    /// Messages may have been lost (a reconnect, a lagging subscriber).
    Gap,
}

impl Message {
    /// The wire form: `inv <replica> <seq> <key>` or `ack <replica> <seq>` (replica ids have no
    /// spaces; the key is last, whole).
    pub fn encode(&self) -> String {
        match self {
            Message::Key { replica, seq, key } => format!("inv {replica} {seq} {key}"),
            Message::Ack { replica, seq } => format!("ack {replica} {seq}"),
            Message::Gap => "gap".into(),
        }
    }

    /// Parses what [`Message::encode`] wrote; anything else is a gap (an unknown message might
    /// have meant an invalidation).
    pub fn decode(payload: &str) -> Message {
        let mut parts = payload.splitn(4, ' ');
        let parsed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("inv"), Some(r), Some(seq), Some(key)) => (|| {
                Some(Message::Key {
                    replica: r.to_owned(),
                    seq: seq.parse().ok()?,
                    key: Key::new(key).ok()?,
                })
            })(),
            (Some("ack"), Some(r), Some(seq), None) => seq.parse().ok().map(|seq| Message::Ack {
                replica: r.to_owned(),
                seq,
            }),
            _ => None,
        };
        parsed.unwrap_or(Message::Gap)
    }
}

/// A publish/subscribe channel for invalidation messages between replicas of a
/// [`TieredStore`](super::TieredStore).
#[async_trait]
pub trait Invalidator: std::fmt::Debug + Send + Sync + 'static {
    /// Publishes one message; returns once the channel accepted it, with the number of
    /// subscriptions it was delivered to (this replica's own included).
    async fn publish(&self, payload: &str) -> Result<usize>;

    /// Subscribes; the subscription is active when this returns. The stream ends if the
    /// subscription breaks (the caller then resubscribes and treats it as a gap).
    async fn subscribe(&self) -> Result<BoxStream<'static, Message>>;
}

/// An in-process channel: replicas in one process (tests, or several stores sharing one
/// authoritative tier).
#[derive(Debug, Clone)]
pub struct MemoryInvalidator {
    tx: tokio::sync::broadcast::Sender<String>,
}

impl Default for MemoryInvalidator {
    fn default() -> Self {
        MemoryInvalidator {
            tx: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl MemoryInvalidator {
    /// A new channel; clone it (or share the `Arc`) to connect replicas.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

#[async_trait]
impl Invalidator for MemoryInvalidator {
    async fn publish(&self, payload: &str) -> Result<usize> {
        // No subscriber is not an error: nobody has anything to invalidate.
        Ok(self.tx.send(payload.to_owned()).unwrap_or(0))
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, Message>> {
        let rx = self.tx.subscribe();
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            use tokio::sync::broadcast::error::RecvError;
            match rx.recv().await {
                Ok(p) => Some((Message::decode(&p), rx)),
                Err(RecvError::Lagged(_)) => Some((Message::Gap, rx)),
                Err(RecvError::Closed) => None,
            }
        })
        .boxed())
    }
}

/// Redis pub/sub (`PUBLISH` / `SUBSCRIBE` on one channel). Delivery is at most once: a
/// replica that loses its connection resubscribes and revalidates everything it cached.
#[cfg(feature = "tiered-redis")]
#[derive(Clone)]
pub struct RedisInvalidator {
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    channel: String,
}

#[cfg(feature = "tiered-redis")]
impl std::fmt::Debug for RedisInvalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisInvalidator")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tiered-redis")]
fn redis_err(e: redis::RedisError) -> crate::Error {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        crate::Error::transient(e)
    } else {
        crate::Error::backend(e)
    }
}

#[cfg(feature = "tiered-redis")]
impl RedisInvalidator {
    /// Connects to `url` (`redis://host:port/db`) and uses `channel`.
    pub async fn connect(url: &str, channel: &str) -> Result<Arc<Self>> {
        crate::drivers::tls::ensure_crypto_provider();
        let client = redis::Client::open(url)
            .map_err(|e| crate::Error::InvalidInput(format!("invalidation URL {url:?}: {e}")))?;
        let conn = redis::aio::ConnectionManager::new(client.clone())
            .await
            .map_err(redis_err)?;
        Ok(Arc::new(RedisInvalidator {
            client,
            conn,
            channel: channel.to_owned(),
        }))
    }
}

#[cfg(feature = "tiered-redis")]
#[async_trait]
impl Invalidator for RedisInvalidator {
    async fn publish(&self, payload: &str) -> Result<usize> {
        let mut conn = self.conn.clone();
        let n = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(n.max(0) as usize)
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, Message>> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(redis_err)?;
        pubsub.subscribe(&self.channel).await.map_err(redis_err)?;
        Ok(pubsub
            .into_on_message()
            .map(|msg| match msg.get_payload::<String>() {
                Ok(p) => Message::decode(&p),
                Err(_) => Message::Gap,
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let key = Key::new("a b/c").unwrap_or_else(|_| Key::new("a/c").unwrap());
        for m in [
            Message::Key {
                replica: "r-1".into(),
                seq: 7,
                key,
            },
            Message::Ack {
                replica: "r-1".into(),
                seq: 7,
            },
        ] {
            assert_eq!(Message::decode(&m.encode()), m);
        }
        assert_eq!(Message::decode("garbage"), Message::Gap);
        assert_eq!(Message::decode("inv r x k"), Message::Gap);
    }

    #[tokio::test]
    async fn memory_channel_counts_subscribers() {
        let inv = MemoryInvalidator::new();
        assert_eq!(inv.publish("x").await.unwrap(), 0);
        let mut a = inv.subscribe().await.unwrap();
        let _b = inv.subscribe().await.unwrap();
        assert_eq!(inv.publish("ack r 1").await.unwrap(), 2);
        assert_eq!(
            a.next().await,
            Some(Message::Ack {
                replica: "r".into(),
                seq: 1
            })
        );
    }
}
