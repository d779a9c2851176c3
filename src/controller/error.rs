//! The reconcilers' error type. Each variant names what failed; `category()` is the bounded
//! reason used for metrics, Events and the Ready condition.

use kube::runtime::finalizer;

use crate::broker::{BrokerError, pool::BrokerUnavailable, pool::ResolveError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    BrokerUnavailable(#[from] BrokerUnavailable),
    #[error(transparent)]
    Resolve(Box<ResolveError>),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("{0}")]
    Filter(#[from] crate::topology::subscription::FilterError),
    #[error("{0}")]
    TopicNotReady(String),
    #[error("{0}")]
    WebhookNotFound(String),
    #[error("{0}")]
    SigningSecret(String),
    #[error("failed to {action}: {source}")]
    Kube {
        action: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("object has no namespace")]
    NotNamespaced,
    #[error("failed to add or remove the finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// The object in the watch cache was older than the apiserver's (the finalizer patch's
    /// test of the current finalizers failed); the watch catches up within moments.
    #[error("the cached object is behind the apiserver; retrying with the current one")]
    StaleObject,
}

impl From<ResolveError> for Error {
    fn from(e: ResolveError) -> Self {
        Self::Resolve(Box::new(e))
    }
}

impl Error {
    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Self::Kube { action, source: Box::new(source) }
    }

    /// Bounded reason, PascalCase.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Broker(e) => e.category(),
            Self::BrokerUnavailable(_) => "BrokerUnavailable",
            Self::Resolve(e) => e.category(),
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::Filter(_) => "FilterMismatch",
            Self::TopicNotReady(_) => "TopicNotReady",
            Self::WebhookNotFound(_) => "WebhookNotFound",
            Self::SigningSecret(_) => "SigningSecretInvalid",
            Self::Kube { .. } | Self::Finalizer(_) => "KubeApiError",
            Self::StaleObject => "StaleObject",
            Self::NotNamespaced => "NotNamespaced",
        }
    }

    /// A human must act before this can succeed (kstatus `Stalled`); the controller still
    /// retries with backoff in case the cause goes away.
    pub fn needs_human(&self) -> bool {
        match self {
            Self::Broker(e) => e.needs_human(),
            Self::Resolve(e) => !matches!(**e, ResolveError::ReadSecret { .. } | ResolveError::Client(_)),
            Self::InvalidSpec(_) | Self::NotNamespaced | Self::Filter(_) | Self::SigningSecret(_) => true,
            Self::BrokerUnavailable(_)
            | Self::Kube { .. }
            | Self::Finalizer(_)
            | Self::StaleObject
            | Self::TopicNotReady(_)
            | Self::WebhookNotFound(_) => false,
        }
    }

    /// Only a change to this object or one it watches can fix this, so retrying is pointless.
    pub fn awaits_change(&self) -> bool {
        matches!(
            self,
            Self::InvalidSpec(_)
                | Self::NotNamespaced
                | Self::Filter(_)
                | Self::TopicNotReady(_)
                | Self::WebhookNotFound(_)
        )
    }

    /// Unwraps the finalizer helper's error so categories stay those of the reconciler.
    pub fn from_finalizer(err: finalizer::Error<Self>) -> Self {
        match err {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(kube::Error::Api(s))
            | finalizer::Error::RemoveFinalizer(kube::Error::Api(s))
                if s.code == 422 =>
            {
                Self::StaleObject
            }
            other => Self::Finalizer(Box::new(other)),
        }
    }
}
