//! The Docker container spec of a model sidecar ([`crate::manifest::ModelPlan`]): pure data
//! (no engine calls), unit-tested below.
//!
//! A model sidecar joins only the bottle's internal network (static address, its name as the
//! network alias, DNS pinned to the sidecar), mounts only its named volumes, has every
//! capability dropped, `no-new-privileges` and a process cap, and sees no workspace and no
//! secret value: only the placeholders of its own secrets. With egress routes it is pointed at the proxy
//! sidecar and trusts the bottle CA (the one bind mount, a file bottle generated).
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointIpamConfig, EndpointSettings, HostConfig,
    HostConfigLogConfig, Mount, MountType, NetworkingConfig,
};

use crate::manifest::{Gpu, ModelEngine, ModelPlan};
use crate::runtime::bottle::AGENT_CA_PATH;
use crate::runtime::labels;

/// The role label value of a model sidecar.
pub const MODEL_ROLE: &str = "model";

/// Size of `/dev/shm` for vLLM (its workers share tensors through it; Docker's 64 MiB default
/// is far too small).
pub const VLLM_SHM_SIZE: i64 = 2 << 30;

/// The most processes and threads a model sidecar may have: far above what an inference server
/// runs (a thread pool per core and GPU), low enough to stop a fork bomb.
pub const MODEL_PIDS_LIMIT: i64 = 4096;

/// What a model sidecar's container is assembled from.
pub struct ModelInputs<'a> {
    /// The resolved model.
    pub model: &'a ModelPlan,
    /// The bottle's labels for role [`MODEL_ROLE`] (`BottleLabels::for_role("model")`);
    /// [`labels::MODEL`] is added.
    pub labels: HashMap<String, String>,
    /// The internal network (id or name).
    pub internal: &'a str,
    /// The sidecar's address (the model's DNS server).
    pub sidecar_ip: Ipv4Addr,
    /// The model's static address.
    pub model_ip: Ipv4Addr,
    /// The proxy URL serving this model's egress routes, e.g. `http://10.0.0.2:3129`; used
    /// only when the model has egress routes.
    pub proxy: Option<&'a str>,
    /// The bottle CA certificate on the host (mounted read-only at [`AGENT_CA_PATH`] when the
    /// model has egress routes).
    pub ca: Option<&'a Path>,
}

/// The container name of model `name` of bottle `id`: `bottle-<id>-model-<name>`.
pub fn model_container_name(id: &str, name: &str) -> String {
    labels::name(id, &format!("{MODEL_ROLE}-{name}"))
}

/// The model's environment: its own env, the placeholders of its secrets and, with egress
/// routes and a proxy, the proxy and CA variables (nothing overrides those).
pub fn model_env(i: &ModelInputs) -> Vec<String> {
    let m = i.model;
    let mut env: Vec<(String, String)> = m
        .env
        .iter()
        .chain(m.placeholders.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let (false, Some(proxy)) = (m.egress.is_empty(), i.proxy) {
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            env.push((k.into(), proxy.to_string()));
        }
        // 0.0.0.0 too: `ollama pull` in the container talks to its own server at
        // OLLAMA_HOST=0.0.0.0:11434, which Go's proxy rules do not count as loopback.
        let local = format!("localhost,127.0.0.1,::1,0.0.0.0,{},{}", m.name, i.model_ip);
        env.push(("NO_PROXY".into(), local.clone()));
        env.push(("no_proxy".into(), local));
        if i.ca.is_some() {
            for k in [
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
                "GIT_SSL_CAINFO",
            ] {
                env.push((k.into(), AGENT_CA_PATH.into()));
            }
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The GPU device request of a model (NVIDIA runtime), if it asks for GPUs.
pub fn device_requests(gpu: Option<&Gpu>) -> Option<Vec<DeviceRequest>> {
    let (count, device_ids) = match gpu? {
        Gpu::All => (Some(-1), None),
        Gpu::Devices(ids) => (None, Some(ids.clone())),
    };
    Some(vec![DeviceRequest {
        driver: Some("nvidia".into()),
        count,
        device_ids,
        capabilities: Some(vec![vec!["gpu".into()]]),
        options: None,
    }])
}

/// The model sidecar's container (created, never started here): see the module doc.
pub fn model_container(i: &ModelInputs) -> ContainerCreateBody {
    let m = i.model;
    let mut mounts: Vec<Mount> = m
        .volumes
        .iter()
        .map(|v| Mount {
            typ: Some(MountType::VOLUME),
            source: Some(v.name.clone()),
            target: Some(v.target.clone()),
            read_only: Some(v.read_only),
            ..Default::default()
        })
        .collect();
    if let (false, Some(_), Some(ca)) = (m.egress.is_empty(), i.proxy, i.ca) {
        mounts.push(Mount {
            typ: Some(MountType::BIND),
            source: Some(ca.display().to_string()),
            target: Some(AGENT_CA_PATH.into()),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let host_config = HostConfig {
        network_mode: Some(i.internal.to_string()),
        dns: Some(vec![i.sidecar_ip.to_string()]),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        pids_limit: Some(MODEL_PIDS_LIMIT),
        mounts: Some(mounts),
        device_requests: device_requests(m.gpu.as_ref()),
        shm_size: (m.engine == ModelEngine::Vllm).then_some(VLLM_SHM_SIZE),
        init: Some(true),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([("max-size".into(), "50m".into())])),
        }),
        ..Default::default()
    };
    let endpoint = EndpointSettings {
        aliases: Some(vec![m.name.clone()]),
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(i.model_ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut labels = i.labels.clone();
    labels.insert(labels::MODEL.into(), m.name.clone());
    ContainerCreateBody {
        image: Some(m.image.clone()),
        cmd: (!m.cmd.is_empty()).then(|| m.cmd.clone()),
        hostname: Some(m.name.clone()),
        env: Some(model_env(i)),
        tty: Some(false),
        open_stdin: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        labels: Some(labels),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(i.internal.to_string(), endpoint)])),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> ModelPlan {
        let spec: crate::manifest::ModelSpec = toml::from_str(text).unwrap();
        crate::manifest::resolve_model(&spec, "bottles/m.toml")
    }

    fn inputs<'a>(m: &'a ModelPlan, ca: Option<&'a Path>) -> ModelInputs<'a> {
        ModelInputs {
            model: m,
            labels: HashMap::from([(labels::ROLE.into(), MODEL_ROLE.into())]),
            internal: "net-int",
            sidecar_ip: Ipv4Addr::new(10, 0, 0, 2),
            model_ip: Ipv4Addr::new(10, 0, 0, 4),
            proxy: Some("http://10.0.0.2:3129"),
            ca,
        }
    }

    #[test]
    fn a_gpu_model_is_sealed_on_the_internal_network() {
        let m = plan(
            "name = \"coder\"\nengine = \"vllm\"\nmodel = \"Qwen/Q\"\ngpu = \"all\"\n\
             secrets = [\"HF_TOKEN\"]\nvolumes = [\"hf-cache:/root/.cache/huggingface\"]\n",
        );
        let body = model_container(&inputs(&m, Some(Path::new("/run/b/ca.pem"))));
        assert_eq!(body.image.as_deref(), Some("vllm/vllm-openai"));
        assert_eq!(body.hostname.as_deref(), Some("coder"));
        assert_eq!(body.cmd.as_ref().unwrap()[0], "Qwen/Q");
        let labels = body.labels.clone().unwrap();
        assert_eq!(labels[labels::ROLE], "model");
        assert_eq!(labels[labels::MODEL], "coder");
        let env = body.env.clone().unwrap();
        assert!(env.contains(&"HF_TOKEN=bottle-placeholder-HF_TOKEN".to_string()));
        // No egress routes: no proxy, no CA, no bind mount at all.
        assert!(!env.iter().any(|e| e.contains("PROXY") || e.contains("CA")));
        let hc = body.host_config.clone().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("net-int"));
        assert_eq!(hc.dns, Some(vec!["10.0.0.2".to_string()]));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            hc.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert_eq!(hc.pids_limit, Some(MODEL_PIDS_LIMIT));
        assert_eq!(hc.shm_size, Some(VLLM_SHM_SIZE));
        assert_eq!(hc.binds, None);
        let mounts = hc.mounts.unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[0].source.as_deref(), Some("hf-cache"));
        assert!(!mounts
            .iter()
            .any(|x| x.target.as_deref() == Some("/workspace")));
        let dr = hc.device_requests.unwrap();
        assert_eq!(dr.len(), 1);
        assert_eq!(dr[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(dr[0].count, Some(-1));
        assert_eq!(dr[0].device_ids, None);
        assert_eq!(dr[0].capabilities, Some(vec![vec!["gpu".to_string()]]));
        let eps = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(eps.len(), 1);
        let ep = &eps["net-int"];
        assert_eq!(ep.aliases, Some(vec!["coder".to_string()]));
        assert_eq!(
            ep.ipam_config.as_ref().unwrap().ipv4_address.as_deref(),
            Some("10.0.0.4")
        );
        assert_eq!(
            model_container_name("abc123", "coder"),
            "bottle-abc123-model-coder"
        );
    }

    #[test]
    fn gpu_device_ids_and_no_gpu() {
        let m = plan(
            "name = \"l\"\nengine = \"llamacpp\"\nmodel = \"/m/q.gguf\"\ngpu = [0, \"GPU-ab\"]\n",
        );
        let hc = model_container(&inputs(&m, None)).host_config.unwrap();
        let dr = hc.device_requests.unwrap();
        assert_eq!(dr[0].count, None);
        assert_eq!(
            dr[0].device_ids,
            Some(vec!["0".to_string(), "GPU-ab".to_string()])
        );
        assert_eq!(hc.shm_size, None);
        let m = plan("name = \"o\"\nengine = \"ollama\"\nmodel = \"q\"\n");
        let hc = model_container(&inputs(&m, None)).host_config.unwrap();
        assert_eq!(hc.device_requests, None);
        assert_eq!(hc.mounts, Some(vec![]));
    }

    #[test]
    fn egress_routes_go_through_the_proxy_with_the_bottle_ca() {
        let m = plan(
            "name = \"coder\"\nengine = \"vllm\"\nmodel = \"Q\"\nsecrets = [\"HF_TOKEN\"]\n\
             [[egress]]\nhost = \"huggingface.co\"\nauth = { secret = \"HF_TOKEN\" }\n",
        );
        let body = model_container(&inputs(&m, Some(Path::new("/run/b/ca.pem"))));
        let env = body.env.unwrap();
        assert!(env.contains(&"HTTPS_PROXY=http://10.0.0.2:3129".to_string()));
        assert!(env.contains(&format!("SSL_CERT_FILE={AGENT_CA_PATH}")));
        assert!(
            env.contains(&"NO_PROXY=localhost,127.0.0.1,::1,0.0.0.0,coder,10.0.0.4".to_string())
        );
        // The token is a placeholder; the proxy injects the real one on the route.
        assert!(env.contains(&"HF_TOKEN=bottle-placeholder-HF_TOKEN".to_string()));
        let mounts = body.host_config.unwrap().mounts.unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].source.as_deref(), Some("/run/b/ca.pem"));
        assert_eq!(mounts[0].read_only, Some(true));
    }

    #[test]
    fn no_secret_value_reaches_the_model_container() {
        let mut spec = crate::runtime::spec::LaunchSpec::sample();
        spec.secrets.insert(
            "HF_TOKEN".into(),
            zeroize::Zeroizing::new("hf_realvalue123".into()),
        );
        let m = plan("name = \"c\"\nengine = \"vllm\"\nmodel = \"Q\"\nsecrets = [\"HF_TOKEN\"]\n[[egress]]\nhost = \"huggingface.co\"\nauth = { secret = \"HF_TOKEN\" }\n");
        let body = model_container(&inputs(&m, Some(Path::new("/run/b/ca.pem"))));
        let json = serde_json::to_string(&body).unwrap();
        assert!(!json.contains("hf_realvalue123"), "{json}");
        assert!(!json.contains("/workspace"), "{json}");
    }
}
