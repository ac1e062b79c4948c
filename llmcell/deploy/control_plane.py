"""The cell's CPU side: namespace, identity, RBAC, the admin, the gateway and network policy.

The admin is a one-replica StatefulSet whose SQLite state lives on a PersistentVolumeClaim; the
gateway a Deployment of >= 2 behind a LoadBalancer on 8888 (the seed's `sax-http-lb`) with a
PodDisruptionBudget. NetworkPolicies deny ingress by default and then admit: anyone to the
gateway; the gateway and model servers to the admin; the gateway, the admin and the group's own
pods to model servers; the scraper's namespace to every metrics port.
"""

from __future__ import annotations

from llmcell.deploy.common import (ADAPTERS_PATH, ADMIN_PORT, GATEWAY_PORT, SCRATCH, SERVER_PORT,
                                   VLLM_PORT, Cell, adapter_volume, http_container,
                                   small_resources)
from llmcell.deploy.endpoint_picker import EPP_HEALTH_PORT, EPP_METRICS_PORT, EPP_PORT
from llmcell.deploy.k8s import (Certificate, ConfigMap, Deployment, DeploymentSpec, EnvVar, LabelSelector,
                                Namespace, NetworkPolicy, ObjectMeta, PodDisruptionBudget,
                                PodSpec, PodTemplate, PolicyRule, Role, RoleBinding, Service,
                                ServiceAccount, ServicePort, ServiceSpec, StatefulSet,
                                StatefulSetSpec, Volume, VolumeMount)
from llmcell.deploy.plan import WEIGHT_BYTES
from llmcell.metrics.dashboard import dashboard_json


def identity(cell: Cell) -> list:
    c = cell.config
    ns_labels = {"app.kubernetes.io/part-of": "llmcell",
                 "pod-security.kubernetes.io/enforce": "restricted",
                 "pod-security.kubernetes.io/enforce-version": "latest"}
    annotations = ({"iam.gke.io/gcp-service-account": c.gcp_service_account}
                   if c.gcp_service_account else None)
    sa = cell.service_account
    role_meta = cell.meta("admin", f"{c.name}-admin")
    return [
        Namespace(ObjectMeta(c.namespace, labels=ns_labels)),
        ServiceAccount(cell.meta("identity", sa, annotations)),
        # The admin reads the cell's pods and groups, to tell a dead server from a slow one,
        # and (--autoscaler admin) sets the groups' count; nothing else talks to the API server.
        Role(role_meta, [
            PolicyRule([""], ["pods", "services", "endpoints"], ["get", "list", "watch"]),
            PolicyRule(["leaderworkerset.x-k8s.io"], ["leaderworkersets"],
                       ["get", "list", "watch"])] + ([
            PolicyRule(["leaderworkerset.x-k8s.io"], ["leaderworkersets/scale"],
                       ["get", "patch", "update"])] if c.autoscaler == "admin" else [])),
        RoleBinding(role_meta, {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": role_meta.name},
                    [{"kind": "ServiceAccount", "name": sa, "namespace": c.namespace}]),
        # Grafana's dashboard sidecar loads every ConfigMap labelled grafana_dashboard=1.
        ConfigMap(ObjectMeta(f"{c.name}-grafana-dashboard", c.namespace,
                             {**cell.labels("monitoring"), "grafana_dashboard": "1"}),
                  {"llmcell.json": dashboard_json()}),
    ]


def _bytes_per_param(cell: Cell) -> float:
    """What the admin counts per parameter when placing: 16-bit runs as fp32 on most CPUs."""
    dtype = cell.config.plan.dtype
    if cell.config.target == "cpu" and dtype in ("bf16", "fp16"):
        return WEIGHT_BYTES["fp32"]
    return WEIGHT_BYTES[dtype]


def admin(cell: Cell) -> list:
    c = cell.config
    name = cell.name("admin")
    args = ["admin", "--host", "0.0.0.0", "--port", str(ADMIN_PORT),
            "--state", "/var/lib/llmcell/admin.sqlite3",
            "--bytes-per-param", f"{_bytes_per_param(cell):g}",
            # the batch runner sends batches through the gateways' Service, at batch priority
            "--batch-gateway", cell.gateway_url,
            "--blobs", c.batch_blobs or "/var/lib/llmcell/files"]
    if c.autoscaler == "admin":  # the admin owns the groups' count
        args += ["--scale-groups", cell.group_set, "--kube-namespace", c.namespace,
                 "--min-groups", str(c.min_replicas), "--max-groups", str(c.max_replicas)]
    env = [cell.credential()]
    replicas = 1
    if c.state_secret:  # two admins on PostgreSQL: one leads, and only it is ready
        state = args.index("--state") + 1
        args[state] = "$(LLMCELL_STATE_URL)"
        args += ["--advertise", f"http://$(POD_IP):{ADMIN_PORT}"]
        env.append(EnvVar.secret_ref("LLMCELL_STATE_URL", c.state_secret, "url"))
        replicas = 2
    mounts = [VolumeMount("state", "/var/lib/llmcell")]
    volumes = [SCRATCH[0]]
    if c.adapter_pvc:  # the admin reads adapters' headers to check them at publish
        args += ["--model-root", ADAPTERS_PATH]
        mounts.append(VolumeMount("adapters", ADAPTERS_PATH, read_only=True))
        volumes.append(adapter_volume(c.adapter_pvc))
    if cell.gateway_tls_secret:  # trust the gateway's certificate (its Secret's ca.crt)
        args += ["--tls-ca", "/etc/llmcell/gateway-tls/ca.crt"]
        mounts.append(VolumeMount("gateway-tls", "/etc/llmcell/gateway-tls", read_only=True))
        volumes.append(Volume("gateway-tls", secret={"secretName": cell.gateway_tls_secret}))
    if c.api_keys_secret:  # the first admin key, so the cell can be managed from the start
        env.append(EnvVar.secret_ref("LLMCELL_ADMIN_KEY", c.api_keys_secret, "admin-key"))
    container = http_container("admin", c.image, args, ADMIN_PORT, small_resources(), env,
                               mounts=mounts, ready_path="/ready")
    claim = {"metadata": {"name": "state"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": c.admin_storage}},
                      **({"storageClassName": c.storage_class} if c.storage_class else {})}}
    pod = PodTemplate(ObjectMeta(name, labels=cell.labels("admin")), PodSpec(
        [container], service_account_name=cell.service_account, volumes=volumes,
        automount_service_account_token=True, termination_grace_period_seconds=30))
    return [
        Service(cell.meta("admin"), ServiceSpec(cell.selector("admin"),
                                                [ServicePort("http", ADMIN_PORT, "http")])),
        StatefulSet(cell.meta("admin"), StatefulSetSpec(
            LabelSelector(cell.selector("admin")), name, pod, [claim], replicas)),
    ] + ([PodDisruptionBudget(cell.meta("admin"), {
        "minAvailable": 1, "selector": {"matchLabels": cell.selector("admin")}})]
        if replicas > 1 else [])


def gateway(cell: Cell) -> list:
    c = cell.config
    args = ["gateway", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT), "--admin",
            cell.admin_url, "--advertise", f"http://$(POD_IP):{GATEWAY_PORT}"]
    if c.policy != "least_load":
        args += ["--policy", c.policy]
    env, mounts, volumes = [cell.credential()], [], [SCRATCH[0]]
    scheme = "HTTP"
    if cell.gateway_tls_secret:  # a kubernetes.io/tls Secret: the gateway serves HTTPS with it
        mounts.append(VolumeMount("tls", "/etc/llmcell/tls", read_only=True))
        volumes.append(Volume("tls", secret={"secretName": cell.gateway_tls_secret}))
        args += ["--tls-cert", "/etc/llmcell/tls/tls.crt", "--tls-key", "/etc/llmcell/tls/tls.key"]
        scheme = "HTTPS"
    container = http_container("gateway", c.image, args, GATEWAY_PORT,
                               small_resources("500m", "512Mi", "2", "1Gi"), env, mounts,
                               scheme=scheme)
    pod = PodTemplate(ObjectMeta(cell.name("gateway"), labels=cell.labels("gateway")), PodSpec(
        [container], service_account_name=cell.service_account, volumes=volumes,
        automount_service_account_token=False, termination_grace_period_seconds=30))
    service = cell.name("gateway")
    certificate = [Certificate(cell.meta("gateway", service), {
        "secretName": cell.gateway_tls_secret,
        "issuerRef": {"name": c.cert_manager_issuer, "kind": c.cert_manager_kind,
                      "group": "cert-manager.io"},
        "dnsNames": [service, f"{service}.{c.namespace}", f"{service}.{c.namespace}.svc",
                     f"{service}.{c.namespace}.svc.cluster.local"],
        "usages": ["server auth", "digital signature"], "duration": "2160h",
        "renewBefore": "360h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
    })] if c.cert_manager_issuer else []
    return certificate + [
        Service(cell.meta("gateway"), ServiceSpec(
            cell.selector("gateway"), [ServicePort("http", GATEWAY_PORT, "http")],
            type="LoadBalancer")),
        Deployment(cell.meta("gateway"), DeploymentSpec(
            c.gateway_replicas, LabelSelector(cell.selector("gateway")), pod,
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})),
        PodDisruptionBudget(cell.meta("gateway"), {
            "minAvailable": 1, "selector": {"matchLabels": cell.selector("gateway")}}),
    ]


def network_policies(cell: Cell) -> list:
    c = cell.config

    def pods(component: str) -> dict:
        return {"podSelector": {"matchLabels": cell.selector(component)}}

    scraper = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": cell.monitoring_namespace}}}
    tcp = lambda *ports: [{"protocol": "TCP", "port": p} for p in ports]  # noqa: E731
    server_ports = (SERVER_PORT, VLLM_PORT) if c.engine == "vllm" else (SERVER_PORT,)
    scrape = ([{"from": [scraper], "ports": tcp(*server_ports)}]
              if c.monitoring != "none" else [])

    def policy(component: str, rules: list[dict], name: str | None = None) -> NetworkPolicy:
        selector = {} if component == "all" else {"matchLabels": cell.selector(component)}
        return NetworkPolicy(cell.meta("network", name or f"{c.name}-{component}"), {
            "podSelector": selector, "policyTypes": ["Ingress"], "ingress": rules})

    admin_rules = [{"from": [pods("gateway"), pods("model-server"), pods("epp")],
                    "ports": tcp(ADMIN_PORT)}]
    gateway_rules = [{"ports": tcp(GATEWAY_PORT)}]  # from anywhere, the scraper included
    server_rules = [{"from": [pods("gateway"), pods("admin")], "ports": tcp(*server_ports)},
                    # members of a group talk to each other on any port: after the rendezvous
                    # (Ray on 6379, torch.distributed on 29500) they open ephemeral ones
                    {"from": [pods("model-server")]}]
    if c.monitoring != "none":
        admin_rules.append({"from": [scraper], "ports": tcp(ADMIN_PORT)})
    out = [
        policy("all", [], f"{c.name}-default-deny"),
        policy("admin", admin_rules),
        policy("gateway", gateway_rules),
    ]
    if c.inference_pool:
        # the inference gateway's data plane runs outside the cell (a managed proxy, another
        # namespace): it calls the picker, and then a model server directly, with the cell
        # credential the picker put on the request (servers refuse anything without it)
        server_rules.append({"ports": tcp(SERVER_PORT)})
        server_rules[0]["from"].append(pods("epp"))  # KV events, the tokenizer
        epp_rules = [{"ports": tcp(EPP_PORT, EPP_HEALTH_PORT)}]
        if c.monitoring != "none":
            epp_rules.append({"from": [scraper], "ports": tcp(EPP_METRICS_PORT)})
        out.append(policy("epp", epp_rules))
    return out + [policy("model-server", server_rules + scrape)]
