//! Test access to the local control plane started by `e2e/testenv.sh up` (see that script for
//! what runs). Tests read the kubeconfigs from the `TESTENV_*` environment it writes, give
//! themselves a namespace of their own, and poll for eventually consistent results.
//!
//! Cluster tests call [`Testenv::require`] (or [`require_kubeconfig`] when the admin kubeconfig is
//! all they use): without the environment it returns `None` (the test prints a note and passes)
//! unless `CI` is set, where a missing control plane is a failure, so CI can never pass having
//! skipped them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Label on every namespace a test creates, so leftovers are easy to find and remove.
pub const TEST_NAMESPACE_LABEL: &str = "svdm.storage.deckhouse.io/test";

#[derive(Debug, thiserror::Error)]
pub enum TestenvError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
    #[error("environment variable {0} is not set; run `e2e/testenv.sh up` and source its env file")]
    MissingVar(&'static str),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// The local control plane as the environment describes it.
#[derive(Clone, Debug)]
pub struct Testenv {
    pub admin_kubeconfig: PathBuf,
    pub editor_kubeconfig: PathBuf,
    pub nobody_kubeconfig: PathBuf,
    pub editor_namespace: String,
    pub bin_dir: PathBuf,
}

/// A set, non-empty environment variable.
fn var(name: &'static str) -> Result<String, TestenvError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(TestenvError::MissingVar(name))
}

/// The one skip-or-fail policy of cluster tests: without the control plane, `None` and a note
/// outside CI, a panic in CI (a CI run must never pass by skipping its cluster tests).
#[track_caller]
fn required<T>(test: &str, found: Result<T, TestenvError>) -> Option<T> {
    match found {
        Ok(v) => Some(v),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test} needs the local control plane in CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIP {test}: {e}");
            None
        }
    }
}

/// The running test's name (libtest names each test's thread after it), for skip notes.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a cluster test")
        .to_owned()
}

/// The admin kubeconfig (`TESTENV_KUBECONFIG`) alone, for tests that need nothing else of the
/// environment (e.g. to hand it to a process as `KUBECONFIG`); `None` or a panic as
/// [`Testenv::require`].
#[track_caller]
pub fn require_kubeconfig(test: &str) -> Option<PathBuf> {
    required(test, var("TESTENV_KUBECONFIG").map(PathBuf::from))
}

/// A client for the given kubeconfig file (its current context).
pub async fn client_from(path: impl AsRef<Path>) -> Result<Client, TestenvError> {
    let path = path.as_ref();
    client_of(read_kubeconfig(path)?, path).await
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, TestenvError> {
    Kubeconfig::read_from(path).map_err(|source| TestenvError::Kubeconfig {
        path: path.to_owned(),
        source,
    })
}

/// A client for `kc`, read from `path` (named in errors).
async fn client_of(kc: Kubeconfig, path: &Path) -> Result<Client, TestenvError> {
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| TestenvError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    Ok(Client::try_from(cfg)?)
}

impl Testenv {
    /// The control plane, or `None` outside CI when none runs. Panics in CI without one, because a
    /// CI run must never pass by skipping its cluster tests.
    #[track_caller]
    pub fn require(test: &str) -> Option<Self> {
        required(test, Self::from_env())
    }

    pub fn from_env() -> Result<Self, TestenvError> {
        Ok(Self {
            admin_kubeconfig: var("TESTENV_KUBECONFIG")?.into(),
            editor_kubeconfig: var("TESTENV_KUBECONFIG_EDITOR")?.into(),
            nobody_kubeconfig: var("TESTENV_KUBECONFIG_NOBODY")?.into(),
            editor_namespace: var("TESTENV_EDITOR_NAMESPACE")?,
            bin_dir: var("TESTENV_BIN")?.into(),
        })
    }

    /// A client for the given kubeconfig file.
    pub async fn client_for(&self, path: &Path) -> Result<Client, TestenvError> {
        client_from(path).await
    }

    /// The admin client (group system:masters).
    pub async fn admin(&self) -> Result<Client, TestenvError> {
        self.client_for(&self.admin_kubeconfig).await
    }

    /// A client authenticated with a bearer token (e.g. a ServiceAccount token from TokenRequest).
    pub async fn client_with_token(&self, token: &str) -> Result<Client, TestenvError> {
        let mut kc = read_kubeconfig(&self.admin_kubeconfig)?;
        for user in &mut kc.auth_infos {
            if let Some(info) = user.auth_info.as_mut() {
                info.token = Some(token.to_owned().into());
                info.client_certificate = None;
                info.client_key = None;
            }
        }
        client_of(kc, &self.admin_kubeconfig).await
    }

    /// Creates a uniquely named namespace labelled as a test namespace; delete it with
    /// [`TestNamespace::delete`] at the end of the test.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, TestenvError> {
        let client = self.admin().await?;
        let suffix: u32 = rand::random::<u32>() % 1_000_000;
        let name = format!("{prefix}-{suffix:06}");
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(TestNamespace { name, client })
    }
}

/// A namespace owned by one test.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Deletes the namespace (the real namespace controller then removes its contents).
    pub async fn delete(self) -> Result<(), TestenvError> {
        match Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Polls `check` every 250 ms until it returns `Some`, or fails after `timeout`. Eventual
/// consistency (informers, controllers) is the norm against a real API server: poll, never sleep
/// once.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, TestenvError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TestenvError::Timeout(timeout, what.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
