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
    /// A policy's topic does not exist (yet).
    #[error("{0}")]
    TopicNotFound(String),
    /// A second policy for a topic another one already governs.
    #[error("{0}")]
    Conflict(String),
    /// A catalog example does not survive the policy's version chain.
    #[error("{0}")]
    ConversionInvalid(String),
    /// A Subscription's spec.eventVersion does not resolve.
    #[error(transparent)]
    Pin(#[from] crate::versions::lifecycle::PinError),
    /// The policy governing a Subscription's topic is not Ready for its current spec.
    #[error("{0}")]
    VersionPolicyNotReady(String),
    /// A Subscription is pinned to a version past its sunset, under enforcement Block.
    #[error("{0}")]
    VersionSunset(String),
    /// A Subscription's Webhook delivers from another broker than its topic's.
    #[error("{0}")]
    WebhookOnOtherBroker(String),
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
            Self::TopicNotFound(_) => "TopicNotFound",
            Self::Conflict(_) => "Conflict",
            Self::ConversionInvalid(_) => "ConversionInvalid",
            Self::Pin(crate::versions::lifecycle::PinError::NoVersionPolicy { .. }) => "NoVersionPolicy",
            Self::Pin(crate::versions::lifecycle::PinError::UnknownVersion { .. }) => "UnknownVersion",
            Self::VersionPolicyNotReady(_) => "VersionPolicyNotReady",
            Self::VersionSunset(_) => "VersionSunset",
            Self::WebhookOnOtherBroker(_) => "WebhookOnOtherBroker",
            Self::Kube { .. } | Self::Finalizer(_) => "KubeApiError",
            Self::StaleObject => "StaleObject",
            Self::NotNamespaced => "NotNamespaced",
        }
    }

    /// A human must act before this can succeed (kstatus `Stalled`). The controller retries
    /// with backoff in case the cause goes away, except for [`Error::awaits_change`] errors,
    /// which only a change to the object (or one it watches) can fix.
    pub fn needs_human(&self) -> bool {
        match self {
            Self::Broker(e) => e.needs_human(),
            Self::Resolve(e) => !matches!(**e, ResolveError::ReadSecret { .. } | ResolveError::Client(_)),
            Self::InvalidSpec(_)
            | Self::NotNamespaced
            | Self::Filter(_)
            | Self::SigningSecret(_)
            | Self::Conflict(_)
            | Self::ConversionInvalid(_)
            | Self::Pin(_)
            | Self::VersionSunset(_)
            | Self::WebhookOnOtherBroker(_) => true,
            Self::BrokerUnavailable(_)
            | Self::Kube { .. }
            | Self::Finalizer(_)
            | Self::StaleObject
            | Self::TopicNotReady(_)
            | Self::TopicNotFound(_)
            | Self::VersionPolicyNotReady(_)
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
                | Self::TopicNotFound(_)
                | Self::Conflict(_)
                | Self::ConversionInvalid(_)
                | Self::Pin(_)
                | Self::VersionPolicyNotReady(_)
                | Self::VersionSunset(_)
                | Self::WebhookOnOtherBroker(_)
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
