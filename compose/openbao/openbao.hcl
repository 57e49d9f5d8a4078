# OpenBao for the compose stack (profile `openbao`): DEVELOPMENT ONLY.
#
# Raft storage in the openbao-data volume: the transit key (and with it every wrapped data
# key in PostgreSQL) survives restarts, and `bao operator raft snapshot save` takes the
# backup the restore drill and docs/operations/backup-restore.md rely on. The unseal key
# and root token sit in the vault-unseal volume so start.sh can unseal by itself: acceptable
# on a developer's machine only.

storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao"
}

listener "tcp" {
  address = "0.0.0.0:8200"
  # Plain HTTP inside the compose network (development only).
  tls_disable = true
}

api_addr      = "http://kms:8200"
cluster_addr  = "http://openbao:8201"
ui            = true
disable_mlock = true
# The operator's token lives a year in a development stack.
max_lease_ttl = "8760h"
