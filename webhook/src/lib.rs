//! rds-iam-webhook: a mutating admission webhook that injects the RDS IAM
//! token agent into pods annotated `rds-iam/enabled: "true"`.
//!
//! - [`annotations`] reads the pod annotations into an [`annotations::InjectionRequest`].
//! - [`plan`] decides what to inject ([`expand`] handles the kubelet's `$(VAR)`),
//!   [`render`] writes the JSON Patch, and [`mutate`] joins them (pure; shared by
//!   `/mutate` and `inject`).
//! - [`review`] turns an AdmissionReview body into the answer.
//! - [`server`] serves it over HTTPS ([`tls`] loads and reloads the certificate),
//!   with [`metrics`] on a separate plain-HTTP listener. [`listener`] accepts
//!   within the connection cap, [`conn`] serves each connection until its
//!   [`clock`] (header and idle timeouts) runs out, [`budget`] bounds the
//!   request bytes in memory, and [`limits`] holds the settings of all four.
//! - [`inject_cmd`] and [`certs_cmd`] are the offline subcommands; [`audit`] (with
//!   [`audit_cmd`]) finds pods that missed their injection; [`cli`] wires it all.

pub mod annotations;
pub mod audit;
pub mod audit_cmd;
pub mod budget;
pub mod certs_cmd;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod expand;
pub mod inject_cmd;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod mutate;
pub mod plan;
pub mod pod;
pub mod render;
pub mod review;
pub mod server;
pub mod tls;
