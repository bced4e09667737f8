//! The parts of a Pod the webhook reads, and nothing else.
//!
//! A review is not parsed into k8s-openapi's `Pod`: its structs hold every
//! optional field inline, so a `Volume` takes 3,208 bytes and an `EnvVar`
//! 280, while the API server sends a volume in 26 bytes of JSON. A 3 MiB
//! review of minimal volumes took 676 MB that way. Here every field the
//! webhook does not read is skipped without being stored, and each element
//! it keeps costs a few times its JSON at most, so a review's memory stays a
//! small multiple of its size.
//!
//! Field names are those of k8s-openapi, so the code that reads them reads
//! the same; what is copied into the agent converts back to k8s-openapi.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Pod {
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "or_default")]
    pub containers: Vec<Container>,
    pub init_containers: Option<Vec<Container>>,
    pub volumes: Option<Vec<Volume>>,
    pub security_context: Option<SecurityContext>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, deserialize_with = "or_default")]
    pub name: String,
    pub command: Option<Vec<String>>,
    pub env: Option<Vec<EnvVar>>,
    pub volume_mounts: Option<Vec<k8s::VolumeMount>>,
    pub ports: Option<Vec<ContainerPort>>,
    pub security_context: Option<SecurityContext>,
}

/// An env entry; `valueFrom` is boxed, as it is rare and large.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    #[serde(default, deserialize_with = "or_default")]
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<Box<k8s::EnvVarSource>>,
}

impl From<&EnvVar> for k8s::EnvVar {
    fn from(e: &EnvVar) -> Self {
        let EnvVar {
            name,
            value,
            value_from,
        } = e;
        Self {
            name: name.clone(),
            value: value.clone(),
            value_from: value_from.as_deref().cloned(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default, deserialize_with = "or_default")]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, deserialize_with = "or_default")]
    pub container_port: i32,
}

/// The pod's or a container's; only the UID matters here.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    pub run_as_user: Option<i64>,
}

/// The metadata fields the webhook reads, as an `ObjectMeta` (which the
/// admission types need); labels, owners and managed fields are skipped.
fn metadata<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Read {
        name: Option<String>,
        generate_name: Option<String>,
        namespace: Option<String>,
        annotations: Option<BTreeMap<String, String>>,
    }
    let Read {
        name,
        generate_name,
        namespace,
        annotations,
    } = Option::<Read>::deserialize(d)?.unwrap_or_default();
    Ok(ObjectMeta {
        name,
        generate_name,
        namespace,
        annotations,
        ..ObjectMeta::default()
    })
}

/// `null` reads as the default, as k8s-openapi reads it.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl k8s_openapi::Resource for Pod {
    const API_VERSION: &'static str = <k8s::Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <k8s::Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <k8s::Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <k8s::Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <k8s::Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <k8s::Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for Pod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kept element costs a few times its JSON; k8s-openapi's cost 100
    /// times for a volume. (A size check on the types, not a timing.)
    #[test]
    fn kept_elements_are_small() {
        assert!(std::mem::size_of::<Volume>() <= 24);
        assert!(std::mem::size_of::<EnvVar>() <= 56);
        assert!(std::mem::size_of::<Container>() <= 160);
        assert!(
            std::mem::size_of::<k8s::Volume>() > 3000,
            "the reason for this module"
        );
    }

    #[test]
    fn reads_what_the_webhook_needs_and_skips_the_rest() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"},
                         "annotations": {"rds-iam/enabled": "true"},
                         "managedFields": [{}, {}]},
            "spec": {
                "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
                "volumes": [{"name": "v", "emptyDir": {}}],
                "containers": [{
                    "name": "app", "image": "i", "command": ["run"],
                    "env": [{"name": "A", "value": "1"},
                            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": true}],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "securityContext": {"runAsUser": null, "readOnlyRootFilesystem": true}
                }],
                "initContainers": null
            }
        }))
        .unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(pod.metadata.labels, None, "not read");
        assert_eq!(pod.metadata.managed_fields, None, "not read");
        assert_eq!(pod.metadata.annotations.unwrap()["rds-iam/enabled"], "true");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.security_context.unwrap().run_as_user, Some(1000));
        assert_eq!(spec.volumes.unwrap()[0].name, "v");
        assert_eq!(spec.init_containers, None);
        let c = &spec.containers[0];
        assert_eq!(c.name, "app");
        assert_eq!(c.command.as_deref(), Some(&["run".to_owned()][..]));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        assert_eq!(c.security_context.as_ref().unwrap().run_as_user, None);
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[0].value.as_deref(), Some("1"));
        let copied = k8s::EnvVar::from(&env[1]);
        assert_eq!(
            copied.value_from.unwrap().field_ref.unwrap().field_path,
            "metadata.name"
        );
    }
}
