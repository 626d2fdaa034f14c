//! Serving certificates: annotated Services get `kubernetes.io/tls` Secrets, kept valid and
//! re-issued when the CA, the Service's names or the certificate's age require it.

pub mod decide;
pub mod reconcile;

pub use reconcile::{ServingContext, ServingError, run};
