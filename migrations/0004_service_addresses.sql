-- Addresses the control plane chose for services. A row lives as long as its service is
-- declared, so an address or node port is never handed to another service while in use.

-- A service's virtual address (127.77.0.0/16), reached from pods through their node's proxy.
CREATE TABLE service_addresses (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    cluster_ip TEXT NOT NULL UNIQUE,
    PRIMARY KEY (namespace, name)
);

-- The node port of each port of a NodePort or LoadBalancer service, given or allocated.
CREATE TABLE node_ports (
    node_port INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    port INTEGER NOT NULL,
    UNIQUE (namespace, name, port)
);
