//! Resolving an Ingress backend: the Service port, ExternalName or ready EndpointSlice
//! addresses, and whether to speak HTTPS or HTTP/2 to it.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::networking::v1::ServiceBackendPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::annotations::BackendProtocol;
use crate::config::{Scheme, Target, Transport};
use crate::state::{ClusterState, ObjectKey};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A resolved backend, before it is given an id in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    pub name: String,
    pub service: ObjectKey,
    pub transport: Transport,
    pub target: Target,
    pub authority: String,
    /// Why the backend cannot serve, when it cannot (also a warning on the Ingress).
    pub problem: Option<String>,
}

pub struct BackendRequest<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub port: Option<&'a ServiceBackendPort>,
    pub protocol: Option<BackendProtocol>,
    pub verify: bool,
    pub forbid_external_name: bool,
    pub allow_node_local: bool,
}

pub fn resolve(state: &ClusterState, req: &BackendRequest<'_>) -> BackendSpec {
    let key = ObjectKey::new(req.namespace, req.service);
    let port_text = match req.port {
        Some(ServiceBackendPort { number: Some(n), .. }) => n.to_string(),
        Some(ServiceBackendPort { name: Some(n), .. }) => n.clone(),
        _ => "?".to_string(),
    };
    let name = format!("{key}:{port_text}");
    let unavailable = |problem: String, transport: Transport| BackendSpec {
        name: name.clone(),
        service: key.clone(),
        transport,
        target: Target::Unavailable(problem.clone()),
        authority: String::new(),
        problem: Some(problem),
    };
    let service_dns = format!("{}.{}.svc", req.service, req.namespace);
    let fallback_transport = transport_for(None, req, service_dns.clone());

    let Some(service) = state.services.get(&key) else {
        return unavailable(format!("Service {key} not found"), fallback_transport);
    };
    let spec = service.spec.as_ref();
    let external_name = spec
        .filter(|s| s.type_.as_deref() == Some("ExternalName"))
        .and_then(|s| s.external_name.as_deref())
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase());

    let port = match find_port(service, req.port) {
        Ok(port) => port,
        // An ExternalName Service may list no ports: the Ingress's port number is used as is.
        Err(_) if external_name.is_some() && no_ports(service) && req.port.and_then(|p| p.number).is_some() => {
            PortChoice { number: req.port.and_then(|p| p.number).unwrap_or_default(), name: None, target: None }
        }
        Err(problem) => return unavailable(format!("Service {key}: {problem}"), fallback_transport),
    };
    let Ok(service_port) = u16::try_from(port.number) else {
        return unavailable(format!("Service {key}: port {} is out of range", port.number), fallback_transport);
    };

    if let Some(host) = external_name {
        if req.forbid_external_name {
            return unavailable(
                format!(
                    "Service {key} is an ExternalName Service, and they are not allowed (--allow-external-name=false)"
                ),
                fallback_transport,
            );
        }
        if !req.allow_node_local && host.parse::<std::net::IpAddr>().is_ok_and(is_node_local) {
            return unavailable(
                format!("Service {key}: externalName {host} is a loopback or link-local address, which would reach the node itself; refused (allow with --allow-node-local-external-name)"),
                fallback_transport,
            );
        }
        if host.starts_with("*.") || super::valid_host(&host).is_err() {
            return unavailable(
                format!("Service {key}: externalName {} is not a valid DNS name", crate::config::quoted(&host)),
                fallback_transport,
            );
        }
        let transport = transport_for(Some(&port), req, host.clone());
        let authority = authority_of(&host, service_port, transport.scheme);
        return BackendSpec {
            name,
            service: key,
            transport,
            target: Target::ExternalName { host, port: service_port },
            authority,
            problem: None,
        };
    }

    let transport = transport_for(Some(&port), req, service_dns.clone());
    let addresses = ready_addresses(state, &key, &port);
    let authority = authority_of(&service_dns, service_port, transport.scheme);
    BackendSpec { name, service: key, transport, target: Target::Endpoints(addresses), authority, problem: None }
}

/// Loopback (127.0.0.0/8, ::1) and link-local (169.254.0.0/16 — cloud metadata — and fe80::/10).
fn is_node_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

struct PortChoice {
    number: i32,
    name: Option<String>,
    target: Option<IntOrString>,
}

fn no_ports(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.ports.as_ref()).is_none_or(|p| p.is_empty())
}

fn find_port(service: &Service, wanted: Option<&ServiceBackendPort>) -> Result<PortChoice, String> {
    let ports: &[ServicePort] = service.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let choose = |p: &ServicePort| PortChoice { number: p.port, name: p.name.clone(), target: p.target_port.clone() };
    match wanted {
        Some(ServiceBackendPort { number: Some(n), .. }) => {
            ports.iter().find(|p| p.port == *n).map(choose).ok_or_else(|| format!("has no port {n}"))
        }
        Some(ServiceBackendPort { name: Some(name), .. }) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(choose)
            .ok_or_else(|| format!("has no port named {}", crate::config::quoted(name))),
        // Without a port, a Service with exactly one port is unambiguous.
        _ => match ports {
            [only] => Ok(choose(only)),
            _ => Err("the Ingress gives no port and the Service has more than one".into()),
        },
    }
}

/// Port 443 or a port name starting with `https` means TLS (Traefik 1.7); the Ingress's
/// `protocol` annotation overrides.
fn transport_for(port: Option<&PortChoice>, req: &BackendRequest<'_>, server_name: String) -> Transport {
    let detected_https =
        port.is_some_and(|p| p.number == 443 || p.name.as_deref().is_some_and(|n| n.starts_with("https")));
    let (scheme, http2) = match req.protocol {
        Some(BackendProtocol::Http) => (Scheme::Http, false),
        Some(BackendProtocol::Https) => (Scheme::Https, false),
        Some(BackendProtocol::H2c) => (Scheme::Http, true),
        Some(BackendProtocol::H2) => (Scheme::Https, true),
        None if detected_https => (Scheme::Https, false),
        None => (Scheme::Http, false),
    };
    Transport { scheme, http2, verify: req.verify, server_name }
}

fn authority_of(host: &str, port: u16, scheme: Scheme) -> String {
    match (scheme, port) {
        (Scheme::Http, 80) | (Scheme::Https, 443) => host.to_string(),
        _ => format!("{host}:{port}"),
    }
}

/// Ready addresses of the Service's EndpointSlices, with the slice port of the same name as the
/// Service port. Sorted and de-duplicated so equal states give equal configs.
fn ready_addresses(state: &ClusterState, service: &ObjectKey, port: &PortChoice) -> Vec<SocketAddr> {
    let wanted_name = port.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    let slices = state.endpoint_slices.iter().filter(|(key, slice)| {
        key.namespace == service.namespace
            && slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(&service.name)
    });
    for (_, slice) in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        let slice_port = match slice.ports.as_deref() {
            Some(ports) if !ports.is_empty() => {
                ports.iter().find(|p| p.name.as_deref().unwrap_or("") == wanted_name).and_then(|p| p.port)
            }
            // No ports listed: fall back to the Service's numeric targetPort, then its port.
            _ => match &port.target {
                Some(IntOrString::Int(n)) => Some(*n),
                Some(IntOrString::String(_)) => None,
                None => Some(port.number),
            },
        };
        let Some(slice_port) = slice_port.and_then(|p| u16::try_from(p).ok()) else { continue };
        for endpoint in slice.endpoints.iter().flatten() {
            // Kubernetes: a missing `ready` condition is to be read as ready.
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    out.push(SocketAddr::new(ip, slice_port));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
