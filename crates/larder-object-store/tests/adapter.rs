//! What the adapter adds beyond object_store's suite, over the memory and fs drivers: the
//! refusals (an `Update` without an ETag, paths that are not keys, attributes Larder cannot
//! keep, object versions), one ETag through Larder's API and object_store's, the condition
//! forms object_store users send, copy and rename keeping metadata and losing no write,
//! multipart spools, mount prefixes, and opening a tiered stack from TOML.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder::drivers::memory::MemoryStore;
use larder::{Key, Store, StoreExt};
use larder_object_store::LarderObjectStore;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, Error, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, UpdateVersion,
};

fn memory() -> (Arc<MemoryStore>, LarderObjectStore) {
    let larder = Arc::new(MemoryStore::new());
    let store = LarderObjectStore::new(larder.clone());
    (larder, store)
}

#[tokio::test]
async fn update_without_an_etag_is_not_implemented_and_writes_nothing() {
    let (_, store) = memory();
    let path = Path::from("doc");
    store.put(&path, "v1".into()).await.unwrap();
    let mode = PutMode::Update(UpdateVersion {
        e_tag: None,
        version: Some("7".into()),
    });
    let err = store
        .put_opts(&path, "v2".into(), mode.into())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotImplemented { .. }), "{err}");
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got, "v1");
}

#[tokio::test]
async fn one_object_one_etag_through_both_apis() {
    let (larder, store) = memory();
    let key = Key::new("refs/main").unwrap();
    let meta = larder.create(&key, "commit-1".into()).await.unwrap();
    let path = store.path(&key).unwrap();
    assert_eq!(path, Path::from("refs/main"));
    let head = store.head(&path).await.unwrap();
    // The quoted content ETag, exactly as `larder serve` sends it.
    assert_eq!(head.e_tag.as_deref(), Some(meta.etag.to_string().as_str()));
    assert_eq!(
        head.e_tag.as_deref(),
        Some(larder::ETag::of(b"commit-1").to_string().as_str())
    );
    assert!(head.e_tag.as_deref().unwrap().starts_with('"'));
    // An update from object_store is a swap Larder's API sees, and the reverse.
    let r = store
        .put_opts(
            &path,
            "commit-2".into(),
            PutMode::Update(UpdateVersion {
                e_tag: head.e_tag.clone(),
                version: None,
            })
            .into(),
        )
        .await
        .unwrap();
    let now = larder.stat(&key).await.unwrap().unwrap();
    assert_eq!(r.e_tag.as_deref(), Some(now.etag.to_string().as_str()));
    let stale = larder.swap(&key, &meta.etag, "commit-x".into()).await;
    assert!(
        matches!(stale, Err(larder::Error::PreconditionFailed { .. })),
        "{stale:?}"
    );
}

#[tokio::test]
async fn condition_forms_object_store_users_send() {
    let (_, store) = memory();
    let path = Path::from("x");
    let put = store.put(&path, "body".into()).await.unwrap();
    let quoted = put.e_tag.clone().unwrap();
    let bare = quoted.trim_matches('"').to_owned();
    // Quoted, bare, in a list, `*`: all match the current version.
    for tag in [
        quoted.clone(),
        bare.clone(),
        format!("\"nope\", {quoted}"),
        format!("nope, {bare}"),
        "*".to_owned(),
    ] {
        let opts = GetOptions::new().with_if_match(Some(tag.clone()));
        store.get_opts(&path, opts).await.unwrap();
        let opts = GetOptions::new().with_if_none_match(Some(tag.clone()));
        let err = store.get_opts(&path, opts).await.unwrap_err();
        assert!(matches!(err, Error::NotModified { .. }), "{tag}: {err}");
    }
    // An update from the bare form swaps too; one from garbage is a failed precondition.
    let mode = PutMode::Update(UpdateVersion {
        e_tag: Some(bare),
        version: None,
    });
    store
        .put_opts(&path, "v2".into(), mode.into())
        .await
        .unwrap();
    let mode = PutMode::Update(UpdateVersion {
        e_tag: Some("not a \" tag".into()),
        version: None,
    });
    let err = store
        .put_opts(&path, "v3".into(), mode.into())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    // Versions are not kept, and saying so is an error, not a silent read of the current one.
    let opts = GetOptions::new().with_version(Some("1"));
    let err = store.get_opts(&path, opts).await.unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err}");
}

#[tokio::test]
async fn paths_that_are_not_keys_are_refused_everywhere() {
    let (_, store) = memory();
    let bad = Path::parse("dir/back\\slash").unwrap();
    let err = store.put(&bad, "x".into()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    assert!(err.to_string().contains("backslash"), "{err}");
    let err = store.get(&bad).await.unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    let err = store.put_multipart(&bad).await.unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    let good = Path::from("good");
    store.put(&good, "x".into()).await.unwrap();
    let err = store.copy(&good, &bad).await.unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    let err = store.put(&Path::from(""), "x".into()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidPath { .. }), "{err}");
    assert!(store.list(None).collect_paths().await == vec![good]);
}

#[tokio::test]
async fn attributes_larder_cannot_keep_are_refused() {
    let (_, store) = memory();
    let path = Path::from("a");
    let opts = PutOptions::from(Attributes::from_iter([(Attribute::StorageClass, "COLD")]));
    let err = store.put_opts(&path, "x".into(), opts).await.unwrap_err();
    assert!(matches!(err, Error::NotSupported { .. }), "{err}");
    let err = store.head(&path).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }),
        "nothing was written: {err}"
    );
}

#[tokio::test]
async fn copy_keeps_metadata_and_ttl_and_create_only_copies_race_to_one_winner() {
    let (larder, store) = memory();
    let key = Key::new("src").unwrap();
    let opts = larder::PutOptions {
        ttl: Some(Duration::from_secs(3600)),
        content_type: Some("text/plain".into()),
        metadata: [("owner".to_string(), "ops".to_string())].into(),
        ..Default::default()
    };
    larder
        .put(&key, larder::Body::from("payload"), opts)
        .await
        .unwrap();
    let (src, dst) = (Path::from("src"), Path::from("dst"));
    let copies = (0..8).map(|_| store.copy_if_not_exists(&src, &dst));
    let results = futures::future::join_all(copies).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r, Error::AlreadyExists { .. }), "{r}");
    }
    let copied = larder
        .stat(&Key::new("dst").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copied.content_type.as_deref(), Some("text/plain"));
    assert_eq!(copied.metadata["owner"], "ops");
    assert!(copied.expires_at.is_some(), "the TTL is carried");
    let got = store.get(&dst).await.unwrap();
    assert_eq!(
        got.attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref()),
        Some("text/plain")
    );
}

/// A rename deletes the source only if it is still the version copied: a write to the source
/// between the copy and the delete is kept, and the rename says so.
#[tokio::test]
async fn a_rename_never_deletes_a_newer_source() {
    #[derive(Debug)]
    struct WriteDuringRename {
        inner: MemoryStore,
    }
    #[async_trait::async_trait]
    impl Store for WriteDuringRename {
        fn capabilities(&self) -> larder::Capabilities {
            self.inner.capabilities()
        }
        async fn head(&self, k: &Key, o: larder::HeadOptions) -> larder::Result<larder::Meta> {
            self.inner.head(k, o).await
        }
        async fn get(&self, k: &Key, o: larder::GetOptions) -> larder::Result<larder::GetResult> {
            self.inner.get(k, o).await
        }
        async fn put(
            &self,
            k: &Key,
            b: larder::Body,
            o: larder::PutOptions,
        ) -> larder::Result<larder::PutResult> {
            let r = self.inner.put(k, b, o).await;
            if k.as_str() == "to" {
                // Another writer rewrites the source just after the copy landed.
                let src = Key::new("from").unwrap();
                self.inner.put_bytes(&src, "newer".into()).await.unwrap();
            }
            r
        }
        async fn delete(&self, k: &Key, o: larder::DeleteOptions) -> larder::Result<()> {
            self.inner.delete(k, o).await
        }
        async fn list(&self, o: larder::ListOptions) -> larder::Result<larder::ListPage> {
            self.inner.list(o).await
        }
    }
    let store = LarderObjectStore::new(Arc::new(WriteDuringRename {
        inner: MemoryStore::new(),
    }));
    let (from, to) = (Path::from("from"), Path::from("to"));
    store.put(&from, "older".into()).await.unwrap();
    let err = store.rename(&from, &to).await.unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err}");
    let kept = store.get(&from).await.unwrap().bytes().await.unwrap();
    assert_eq!(kept, "newer");
    let moved = store.get(&to).await.unwrap().bytes().await.unwrap();
    assert_eq!(moved, "older");
}

#[tokio::test]
async fn multipart_spools_to_disk_and_cleans_up() {
    let spool = tempfile::tempdir().unwrap();
    let (_, store) = memory();
    let store = store.with_spool_dir(spool.path());
    let entries = || std::fs::read_dir(spool.path()).unwrap().count();
    let path = Path::from("big");

    let mut upload = store.put_multipart(&path).await.unwrap();
    upload
        .put_part(PutPayload::from(vec![1u8; 1000]))
        .await
        .unwrap();
    assert_eq!(entries(), 1, "the part is in a spool directory");
    upload.abort().await.unwrap();
    assert_eq!(entries(), 0, "abort removes the spool");
    assert!(matches!(
        store.head(&path).await,
        Err(Error::NotFound { .. })
    ));

    let mut upload = store.put_multipart(&path).await.unwrap();
    upload
        .put_part(PutPayload::from(vec![1u8; 1000]))
        .await
        .unwrap();
    upload
        .put_part(PutPayload::from(vec![2u8; 10]))
        .await
        .unwrap();
    upload.complete().await.unwrap();
    assert_eq!(entries(), 0, "completion removes the spool");
    assert_eq!(store.head(&path).await.unwrap().size, 1010);

    // MultipartStore: a part that was never uploaded fails the completion, which stores nothing.
    let other = Path::from("other");
    let id = store.create_multipart(&other).await.unwrap();
    let p0 = store
        .put_part(&other, &id, 0, PutPayload::from(vec![3u8; 5]))
        .await
        .unwrap();
    let made_up = object_store::multipart::PartId {
        content_id: "1".into(),
    };
    let err = store
        .complete_multipart(&other, &id, vec![p0.clone(), made_up])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Generic { .. }), "{err}");
    assert!(matches!(
        store.head(&other).await,
        Err(Error::NotFound { .. })
    ));
    store
        .complete_multipart(&other, &id, vec![p0])
        .await
        .unwrap();
    assert_eq!(store.head(&other).await.unwrap().size, 5);
    let err = store.abort_multipart(&other, &id).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound { .. }),
        "the upload is over: {err}"
    );
    assert_eq!(entries(), 0);
}

#[tokio::test]
async fn a_mount_prefix_isolates_and_round_trips() {
    let (larder, root) = memory();
    let a = root.clone().with_prefix("tenants/a").unwrap();
    let b = root.clone().with_prefix("tenants/b/").unwrap();
    a.put(&Path::from("x/1"), "a".into()).await.unwrap();
    b.put(&Path::from("x/1"), "b".into()).await.unwrap();
    assert_eq!(a.list(None).collect_paths().await, vec![Path::from("x/1")]);
    let got = b
        .get(&Path::from("x/1"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, "b");
    let key = a.key(&Path::from("x/1")).unwrap();
    assert_eq!(key.as_str(), "tenants/a/x/1");
    assert!(larder.stat(&key).await.unwrap().is_some());
    let listed = root
        .list_with_delimiter(Some(&Path::from("tenants")))
        .await
        .unwrap();
    assert_eq!(
        listed.common_prefixes,
        vec![Path::from("tenants/a"), Path::from("tenants/b")]
    );
    assert!(root.clone().with_prefix("../up").is_err());
}

#[cfg(feature = "tiered")]
#[tokio::test]
async fn opens_a_tiered_stack_from_toml() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("stack.toml");
    let fs_url = format!("fs://{}/authoritative", dir.path().display());
    std::fs::write(
        &toml,
        format!("[[tiers]]\nstore = \"memory://\"\n[[tiers]]\nstore = \"{fs_url}\"\n"),
    )
    .unwrap();
    let store = LarderObjectStore::open(toml.to_str().unwrap())
        .await
        .unwrap();
    assert!(store.to_string().contains("tiered"), "{store}");
    let path = Path::from("k");
    let v1 = store
        .put_opts(&path, "v1".into(), PutMode::Create.into())
        .await
        .unwrap();
    // The authoritative tier holds it.
    let fs = larder::open(&fs_url).await.unwrap();
    let (bytes, _) = fs.get_bytes(&Key::new("k").unwrap()).await.unwrap();
    assert_eq!(bytes, Bytes::from("v1"));
    let err = store
        .put_opts(&path, "v1'".into(), PutMode::Create.into())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    store
        .put_opts(&path, "v2".into(), PutMode::Update(v1.into()).into())
        .await
        .unwrap();
}

/// Collects a listing's paths, sorted.
trait CollectPaths {
    async fn collect_paths(self) -> Vec<Path>;
}

impl CollectPaths
    for futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
{
    async fn collect_paths(self) -> Vec<Path> {
        use futures::TryStreamExt;
        let mut paths: Vec<Path> = self.map_ok(|m| m.location).try_collect().await.unwrap();
        paths.sort();
        paths
    }
}
