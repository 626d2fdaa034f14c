//! Serving certificates: annotated Services get `kubernetes.io/tls` Secrets, kept valid and
//! re-issued when the CA, the Service's names or the certificate's age require it.

pub(crate) mod decide;
mod index;
mod reconcile;

pub(crate) use decide::format_expiry;
pub(crate) use reconcile::{ServingContext, ServingWatches, run};
