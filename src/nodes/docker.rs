//! [`ContainerRuntime`] on the Docker Engine, through bollard.
//!
//! bollard sends no API version in its paths, so requests get the daemon's default version and
//! responses may lack fields the models know: every failure, including a response that does not
//! deserialize, becomes a [`RuntimeError`], never a panic.

use super::runtime::{
    AttachedExec, ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, MountSource, Network, OutputStream,
    PublishedPort, RuntimeError,
};
use crate::manifest::types::Protocol;
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig, PortBinding, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A Docker Engine connection; cheap to clone.
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
}

fn engine(action: impl Into<String>, error: bollard::errors::Error) -> RuntimeError {
    if let bollard::errors::Error::DockerResponseServerError { status_code: 404, message } = &error {
        return RuntimeError::NotFound { container: message.clone() };
    }
    RuntimeError::Engine { action: action.into(), reason: error.to_string() }
}

impl Docker {
    /// Connects to the local engine (DOCKER_HOST, or the default socket) and checks it answers.
    pub async fn connect() -> Result<Docker, RuntimeError> {
        let client = bollard::Docker::connect_with_local_defaults().map_err(|e| engine("a connection", e))?;
        client.ping().await.map_err(|e| engine("a ping", e))?;
        Ok(Docker { client })
    }

    pub fn client(&self) -> &bollard::Docker {
        &self.client
    }
}

fn protocol_suffix(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

impl ContainerRuntime for Docker {
    async fn ensure_image(&self, image: &str) -> Result<bool, RuntimeError> {
        if self.client.inspect_image(image).await.is_ok() {
            return Ok(false);
        }
        let options = CreateImageOptionsBuilder::default().from_image(image).build();
        let mut progress = self.client.create_image(Some(options), None, None);
        while let Some(item) = progress.next().await {
            if let Err(error) = item {
                return Err(RuntimeError::Pull { image: image.to_owned(), reason: error.to_string() });
            }
        }
        // Some engines end a failed pull without an error item; only the image's presence counts.
        self.client.inspect_image(image).await.map(|_| true).map_err(|error| RuntimeError::Pull {
            image: image.to_owned(),
            reason: format!("the engine reported no error, but the image is absent: {error}"),
        })
    }

    async fn import_image(&self, image: &str, rootfs: Vec<u8>, command: &[&str]) -> Result<(), RuntimeError> {
        if self.client.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        let command_json = serde_json::to_string(command).unwrap_or_else(|_| "[]".into());
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(vec![format!("CMD {command_json}")])
            .build();
        let mut progress = self.client.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
        while let Some(item) = progress.next().await {
            item.map_err(|e| engine(format!("importing {image}"), e))?;
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut host_config = HostConfig {
            memory: spec.memory_limit_bytes,
            nano_cpus: spec.cpu_limit_nanos,
            binds: Some(
                spec.mounts
                    .iter()
                    .map(|mount| {
                        let source = match &mount.source {
                            MountSource::Volume(name) => name.clone(),
                            MountSource::Bind(path) => path.clone(),
                        };
                        // A volume starts empty, as an emptyDir does: the engine does not copy
                        // the image's files at the mount path into it.
                        let mut options = Vec::new();
                        if mount.read_only {
                            options.push("ro");
                        }
                        if matches!(mount.source, MountSource::Volume(_)) {
                            options.push("nocopy");
                        }
                        match options.is_empty() {
                            true => format!("{source}:{}", mount.target),
                            false => format!("{source}:{}:{}", mount.target, options.join(",")),
                        }
                    })
                    .collect(),
            ),
            readonly_rootfs: spec.security.read_only_root.then_some(true),
            cap_add: non_empty(&spec.security.capabilities_added),
            cap_drop: non_empty(&spec.security.capabilities_dropped),
            group_add: non_empty(&spec.security.groups),
            privileged: spec.security.privileged.then_some(true),
            security_opt: {
                let mut options = Vec::new();
                if spec.security.no_new_privileges {
                    options.push("no-new-privileges:true".to_owned());
                }
                if spec.security.seccomp_unconfined {
                    options.push("seccomp=unconfined".to_owned());
                }
                non_empty(&options)
            },
            // A container's log is bounded, whatever the engine's default: logs never fill a
            // node's disk, and `docker logs` reads them.
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), LOG_FILE_SIZE.to_owned()),
                    ("max-file".to_owned(), LOG_FILES.to_owned()),
                ])),
            }),
            ..Default::default()
        };
        let mut hostname = None;
        let mut exposed = Vec::new();
        match &spec.network {
            Network::Own { hostname: name, ports, dns } => {
                hostname = Some(name.clone());
                if let Some(dns) = dns {
                    host_config.dns = Some(dns.nameservers.clone());
                    host_config.dns_search = Some(dns.search.clone());
                    host_config.dns_options = Some(dns.options.clone());
                }
                let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
                for port in ports {
                    let key = format!("{}/{}", port.container_port, protocol_suffix(port.protocol));
                    exposed.push(key.clone());
                    let host_port = if port.host_port == 0 { String::new() } else { port.host_port.to_string() };
                    bindings
                        .entry(key)
                        .or_insert_with(|| Some(Vec::new()))
                        .get_or_insert_with(Vec::new)
                        .push(PortBinding { host_ip: Some(port.host_ip.clone()), host_port: Some(host_port) });
                }
                host_config.port_bindings = Some(bindings);
            }
            Network::JoinContainer(id) => host_config.network_mode = Some(format!("container:{id}")),
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.args.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_dir.clone(),
            user: spec.security.user.clone(),
            labels: Some(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            hostname,
            exposed_ports: if exposed.is_empty() { None } else { Some(exposed) },
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = self
            .client
            .create_container(Some(options), body)
            .await
            .map_err(|e| engine(format!("creating {}", spec.name), e))?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.client.start_container(id, None).await.map_err(|e| engine(format!("starting {id}"), e))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match self.client.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(error) => Err(engine(format!("stopping {id}"), error)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(false).build();
        match self.client.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(error) => Err(engine(format!("removing {id}"), error)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let inspected =
            self.client.inspect_container(id, None).await.map_err(|e| engine(format!("inspecting {id}"), e))?;
        let state = inspected.state.unwrap_or_default();
        let status = state.status.map(|s| s.to_string()).unwrap_or_default();
        let published = inspected
            .network_settings
            .and_then(|n| n.ports)
            .map(|ports| {
                let mut published = Vec::new();
                for (key, bindings) in ports {
                    let Some((port, protocol)) = key.split_once('/') else { continue };
                    let Ok(container_port) = port.parse() else { continue };
                    let protocol = if protocol == "udp" { Protocol::Udp } else { Protocol::Tcp };
                    for binding in bindings.unwrap_or_default() {
                        let host_port = binding.host_port.as_deref().and_then(|p| p.parse().ok()).unwrap_or(0);
                        published.push(PublishedPort {
                            container_port,
                            protocol,
                            host_ip: binding.host_ip.unwrap_or_default(),
                            host_port,
                        });
                    }
                }
                published.sort_by_key(|p| (p.container_port, p.host_port));
                published
            })
            .unwrap_or_default();
        Ok(ContainerInfo {
            id: inspected.id.unwrap_or_default(),
            name: inspected.name.unwrap_or_default().trim_start_matches('/').to_owned(),
            labels: inspected.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect(),
            state: match status.as_str() {
                "created" => ContainerState::Created,
                "running" => ContainerState::Running,
                "exited" => ContainerState::Exited,
                _ => ContainerState::Other,
            },
            exit_code: state.exit_code,
            started_at: state.started_at.filter(|t| !t.starts_with("0001-")),
            finished_at: state.finished_at.filter(|t| !t.starts_with("0001-")),
            error: state.error.filter(|e| !e.is_empty()),
            oom_killed: state.oom_killed.unwrap_or(false),
            published,
            pid: state.pid.filter(|pid| *pid > 0),
        })
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_owned(), labels.iter().map(|(k, v)| format!("{k}={v}")).collect())]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let summaries =
            self.client.list_containers(Some(options)).await.map_err(|e| engine("listing containers", e))?;
        let mut containers = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let state = match summary.state.map(|s| s.to_string()).as_deref() {
                Some("created") => ContainerState::Created,
                Some("running") => ContainerState::Running,
                Some("exited") => ContainerState::Exited,
                _ => ContainerState::Other,
            };
            // The list answers most of what the agent asks; only a stopped container's exit code
            // and reason need an inspect.
            if state != ContainerState::Running {
                match self.inspect(&id).await {
                    Ok(info) => containers.push(info),
                    // Removed between the list and the inspect.
                    Err(RuntimeError::NotFound { .. }) => {}
                    Err(error) => return Err(error),
                }
                continue;
            }
            let mut published: Vec<PublishedPort> = summary
                .ports
                .unwrap_or_default()
                .into_iter()
                .filter_map(|port| {
                    let host_port = port.public_port?;
                    let udp = port.typ.map(|t| t.to_string()).as_deref() == Some("udp");
                    let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
                    Some(PublishedPort {
                        container_port: port.private_port,
                        protocol,
                        host_ip: port.ip.unwrap_or_default(),
                        host_port,
                    })
                })
                .collect();
            published.sort_by_key(|p| (p.container_port, p.host_port));
            containers.push(ContainerInfo {
                id,
                name: summary
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                labels: summary.labels.unwrap_or_default().into_iter().collect(),
                state,
                exit_code: None,
                started_at: None,
                finished_at: None,
                error: None,
                oom_killed: false,
                published,
                pid: None,
            });
        }
        Ok(containers)
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.client.ping().await.map(|_| ()).map_err(|e| engine("a ping", e))
    }

    async fn image_user(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        let inspected =
            self.client.inspect_image(image).await.map_err(|e| engine(format!("inspecting image {image}"), e))?;
        Ok(inspected.config.and_then(|c| c.user).filter(|user| !user.is_empty()))
    }

    async fn volume_path(&self, name: &str) -> Result<std::path::PathBuf, RuntimeError> {
        let inspected =
            self.client.inspect_volume(name).await.map_err(|e| engine(format!("inspecting volume {name}"), e))?;
        Ok(std::path::PathBuf::from(inspected.mountpoint))
    }

    async fn create_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), RuntimeError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            ..Default::default()
        };
        self.client.create_volume(request).await.map(|_| ()).map_err(|e| engine(format!("creating volume {name}"), e))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        match self.client.remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(error) => Err(engine(format!("removing volume {name}"), error)),
        }
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, RuntimeError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_owned(), labels.iter().map(|(k, v)| format!("{k}={v}")).collect())]);
        let options = bollard::query_parameters::ListVolumesOptions { filters: Some(filters) };
        let listed = self.client.list_volumes(Some(options)).await.map_err(|e| engine("listing volumes", e))?;
        Ok(listed.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect())
    }

    fn events(&self, node: &str) -> impl futures_util::Stream<Item = ()> + Send + 'static {
        let filters: HashMap<String, Vec<String>> = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![format!("{}={node}", super::pods::labels::NODE)]),
            ("event".to_owned(), ["start", "die", "oom", "destroy"].map(str::to_owned).to_vec()),
        ]);
        let options = bollard::query_parameters::EventsOptionsBuilder::default().filters(&filters).build();
        // A broken event stream ends; the agent's periodic resync still catches every change.
        self.client.events(Some(options)).take_while(|event| std::future::ready(event.is_ok())).map(|_| ())
    }

    async fn check_in_pod(
        &self,
        sandbox_id: &str,
        check: &super::netns::Check,
        timeout: Duration,
    ) -> Result<(), String> {
        let sandbox = self.inspect(sandbox_id).await.map_err(|e| e.to_string())?;
        let pid = sandbox.pid.ok_or_else(|| "the pod sandbox is not running".to_owned())?;
        let check = check.clone();
        tokio::task::spawn_blocking(move || super::netns::run(pid, &check, timeout))
            .await
            .unwrap_or_else(|_| Err("the probe task panicked".into()))
    }

    async fn connect_in_pod(
        &self,
        sandbox_id: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream, String> {
        let sandbox = self.inspect(sandbox_id).await.map_err(|e| e.to_string())?;
        let pid = sandbox.pid.ok_or_else(|| "the pod sandbox is not running".to_owned())?;
        let stream = tokio::task::spawn_blocking(move || super::netns::connect(pid, port, timeout))
            .await
            .unwrap_or_else(|_| Err("the connecting task panicked".into()))?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())
    }

    async fn usage(&self, id: &str) -> Option<super::usage::Reading> {
        match super::usage::read_cgroup(id) {
            Some(reading) => Some(reading),
            None => engine_usage(&self.client, id).await,
        }
    }

    async fn logs(
        &self,
        id: &str,
        tail: Option<u64>,
        since: Option<i64>,
        timestamps: bool,
    ) -> Result<String, RuntimeError> {
        let mut options = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .timestamps(timestamps)
            .tail(&tail.map_or_else(|| "all".to_owned(), |n| n.to_string()));
        if let Some(since) = since {
            options = options.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        let mut stream = self.client.logs(id, Some(options.build()));
        let mut text = String::new();
        // A stopped container's log ends; a bound keeps a huge one from holding the agent.
        let read = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| engine(format!("reading the log of {id}"), e))?;
                text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                if text.len() > LOG_READ_LIMIT {
                    text.push_str("\n(cut: the log is longer; ask for less with --tail or --since)\n");
                    break;
                }
            }
            Ok::<(), RuntimeError>(())
        };
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(result) => result.map(|()| text),
            Err(_) => Err(RuntimeError::Engine {
                action: format!("reading the log of {id}"),
                reason: "no end within 10 s".into(),
            }),
        }
    }

    fn follow_logs(&self, id: &str, tail: Option<u64>, since: Option<i64>) -> super::runtime::OutputChunks {
        let mut options = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .timestamps(true)
            .tail(&tail.map_or_else(|| "all".to_owned(), |n| n.to_string()));
        if let Some(since) = since {
            options = options.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        let action = format!("following the log of {id}");
        let stream = self.client.logs(id, Some(options.build())).map(move |chunk| output_chunk(&action, chunk));
        Box::pin(stream)
    }

    async fn exec_output(
        &self,
        id: &str,
        command: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(i64, String), RuntimeError> {
        let run = async {
            let config = ExecConfig {
                cmd: Some(command.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                attach_stdin: Some(stdin.is_some()),
                ..Default::default()
            };
            let created = self.client.create_exec(id, config).await.map_err(|e| engine(format!("exec in {id}"), e))?;
            let mut text = String::new();
            if let bollard::exec::StartExecResults::Attached { mut output, mut input } =
                self.client.start_exec(&created.id, None).await.map_err(|e| engine(format!("exec in {id}"), e))?
            {
                if let Some(stdin) = stdin {
                    use tokio::io::AsyncWriteExt as _;
                    // A command that does not read its input is no error.
                    let _ = input.write_all(stdin).await;
                    let _ = input.shutdown().await;
                }
                drop(input);
                while let Some(chunk) = output.next().await {
                    let chunk = chunk.map_err(|e| engine(format!("exec in {id}"), e))?;
                    if text.len() < EXEC_OUTPUT_LIMIT {
                        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                    }
                }
            }
            if text.len() > EXEC_OUTPUT_LIMIT {
                let mut cut = EXEC_OUTPUT_LIMIT;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("\n(cut: the output is longer than 1 MiB)\n");
            }
            let inspected =
                self.client.inspect_exec(&created.id).await.map_err(|e| engine(format!("exec in {id}"), e))?;
            Ok((inspected.exit_code.unwrap_or(-1), text))
        };
        tokio::time::timeout(timeout, run).await.unwrap_or_else(|_| {
            Err(RuntimeError::Engine { action: format!("exec in {id}"), reason: format!("no end within {timeout:?}") })
        })
    }

    async fn exec_attached(
        &self,
        id: &str,
        command: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<AttachedExec, RuntimeError> {
        let action = || format!("exec in {id}");
        let config = ExecConfig {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(stdin),
            tty: Some(tty),
            ..Default::default()
        };
        let created = self.client.create_exec(id, config).await.map_err(|e| engine(action(), e))?;
        let options = bollard::exec::StartExecOptions { detach: false, tty, output_capacity: None };
        let started = self.client.start_exec(&created.id, Some(options)).await.map_err(|e| engine(action(), e))?;
        let bollard::exec::StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Engine { action: action(), reason: "the engine did not attach".into() });
        };
        let action = action();
        let output = output.map(move |chunk| output_chunk(&action, chunk));
        Ok(AttachedExec { exec_id: created.id, output: Box::pin(output), input })
    }

    async fn resize_exec(&self, exec_id: &str, columns: u16, rows: u16) -> Result<(), RuntimeError> {
        let size = bollard::exec::ResizeExecOptions { height: rows, width: columns };
        self.client.resize_exec(exec_id, size).await.map_err(|e| engine(format!("resizing exec {exec_id}"), e))
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<i64, RuntimeError> {
        let inspected =
            self.client.inspect_exec(exec_id).await.map_err(|e| engine(format!("inspecting exec {exec_id}"), e))?;
        Ok(inspected.exit_code.unwrap_or(-1))
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<i64, RuntimeError> {
        let run = async {
            let config = ExecConfig {
                cmd: Some(command.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let created = self.client.create_exec(id, config).await.map_err(|e| engine(format!("exec in {id}"), e))?;
            if let bollard::exec::StartExecResults::Attached { mut output, .. } =
                self.client.start_exec(&created.id, None).await.map_err(|e| engine(format!("exec in {id}"), e))?
            {
                while output.next().await.is_some() {}
            }
            let inspected =
                self.client.inspect_exec(&created.id).await.map_err(|e| engine(format!("exec in {id}"), e))?;
            Ok(inspected.exit_code.unwrap_or(-1))
        };
        tokio::time::timeout(timeout, run).await.unwrap_or_else(|_| {
            Err(RuntimeError::Engine {
                action: format!("exec in {id}"),
                reason: format!("no answer within {timeout:?}"),
            })
        })
    }
}

/// A piece of a container's output as berth's runtime boundary gives it.
fn output_chunk(
    action: &str,
    chunk: Result<bollard::container::LogOutput, bollard::errors::Error>,
) -> Result<(OutputStream, Vec<u8>), RuntimeError> {
    match chunk {
        Ok(bollard::container::LogOutput::StdErr { message }) => Ok((OutputStream::Stderr, message.to_vec())),
        Ok(other) => Ok((OutputStream::Stdout, other.into_bytes().to_vec())),
        Err(error) => Err(engine(action.to_owned(), error)),
    }
}

/// The most output `exec_output` keeps.
pub const EXEC_OUTPUT_LIMIT: usize = 1 << 20;

/// The most of a log one request reads.
const LOG_READ_LIMIT: usize = 8 << 20;

/// Each container's log rotates at this size, and keeps this many files.
const LOG_FILE_SIZE: &str = "10m";
const LOG_FILES: &str = "3";

/// A container's usage from the engine's one-shot stats: one answer, without the second the
/// streaming call waits to compute a rate.
async fn engine_usage(client: &bollard::Docker, id: &str) -> Option<super::usage::Reading> {
    let options = bollard::query_parameters::StatsOptionsBuilder::new().stream(false).one_shot(true).build();
    let stats = client.stats(id, Some(options)).next().await?.ok()?;
    let cpu_ns = stats.cpu_stats?.cpu_usage?.total_usage?;
    let memory = stats.memory_stats?;
    let counters = memory.stats.unwrap_or_default();
    let inactive = counters.get("inactive_file").or_else(|| counters.get("total_inactive_file")).copied().unwrap_or(0);
    Some(super::usage::Reading { cpu_ns, memory_bytes: memory.usage?.saturating_sub(inactive) })
}

/// `None` for an empty list, so the engine keeps its default.
fn non_empty(items: &[String]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| items.to_vec())
}
