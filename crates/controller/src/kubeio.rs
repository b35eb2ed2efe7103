//! Small helpers over kube's Api that make every write idempotent.

use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

use crate::error::{Result, is_conflict, is_not_found};

/// Deletes `name`; a missing object is success. Returns whether it existed.
pub async fn delete_opt<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates `obj`; an existing object of that name is success.
pub async fn create_opt<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// JSON merge patch (callers put `metadata.resourceVersion` in it for an optimistic lock).
pub async fn merge<K>(api: &Api<K>, name: &str, patch: &serde_json::Value) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?)
}

/// Whether an object exists (metadata only).
pub async fn exists<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(api.get_metadata_opt(name).await?.is_some())
}
