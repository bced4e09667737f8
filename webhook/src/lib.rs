//! rds-iam-webhook: a mutating admission webhook that injects the RDS IAM
//! token agent into pods annotated `rds-iam/enabled: "true"`.
//!
//! - [`annotations`] reads the pod annotations into an [`annotations::InjectionRequest`].
//! - [`mutate`] builds the JSON Patch (pure; shared by `/mutate` and `inject`).
//! - [`review`] turns an AdmissionReview body into the answer.
//! - [`server`] serves it over HTTPS ([`tls`] loads and reloads the certificate),
//!   with [`metrics`] on a separate plain-HTTP listener.
//! - [`inject_cmd`] and [`certs_cmd`] are the offline subcommands; [`audit`] (with
//!   [`audit_cmd`]) finds pods that missed their injection; [`cli`] wires it all.

pub mod annotations;
pub mod audit;
pub mod audit_cmd;
pub mod certs_cmd;
pub mod cli;
pub mod config;
pub mod inject_cmd;
pub mod metrics;
pub mod mutate;
pub mod review;
pub mod server;
pub mod tls;
