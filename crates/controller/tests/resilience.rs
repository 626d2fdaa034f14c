//! Resilience against a real kube-apiserver: a part of the CA pass that fails (here the bundle
//! copy) never withholds the CA from the controllers.

mod common;

use common::{WAIT, controller, data, request_certificate, wait_secret};
use k8s_openapi::api::core::v1::{Event, Secret, Service};
use kube::Api;
use kube::api::ListParams;
use service_ca_controller::names;
use service_ca_testing::{TestContext, eventually};

#[tokio::test]
async fn a_failing_bundle_copy_does_not_block_issuance() {
    let ctx = TestContext::new("res-publish").await.unwrap();
    // The copy goes to a namespace that does not exist: every publication fails.
    let target = ("no-such-namespace-res".to_string(), "copy".to_string());
    let running = controller(&ctx, |cfg| cfg.publish_bundle_to = Some(target)).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    request_certificate(&services, "web", "web-tls").await;
    let issued = wait_secret(
        &secrets,
        "web-tls",
        "issued despite the failing copy",
        |s| data(s, names::TLS_CRT).is_some(),
    )
    .await;
    assert!(data(&issued, names::TLS_KEY).is_some());
    let events: Api<Event> = ctx.api();
    eventually(
        WAIT,
        "a BundlePublishFailed Warning on the CA Secret",
        || async {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("BundlePublishFailed")
                        && e.involved_object.name.as_deref() == Some("signing-key")
                })
        },
    )
    .await;
    assert!(
        running.metrics.encode().contains(
            "service_ca_reconcile_errors_total{controller=\"ca\",category=\"not_found\"}"
        )
    );
    running.stop().await;
}
