#!/bin/sh
# The one-shot `init` job of docker-compose.yml (copied into the `cairn` image as cairn-init):
# creates and migrates the database, bootstraps the first instance (admin token written to
# /secrets/admin.token), and creates a SCIM provisioner token for the bootstrap admin in
# /secrets/scim.token. Every step is idempotent, so it runs on every `docker compose up`.
set -eu
SECRETS=${CAIRN_SECRETS_DIR:-/secrets}
umask 077

cairn migrate --create-database

# Prints the instance and the admin token once (first run); on later runs: "an instance exists".
cairn init --token-file "$SECRETS/admin.token"
if [ ! -s "$SECRETS/admin.token" ]; then
  echo "cairn-init: an instance existed already, but $SECRETS/admin.token is missing" >&2
  echo "cairn-init: (the secrets volume was removed and the database kept?); create a new admin" >&2
  echo "cairn-init: token with: docker compose run --rm init cairn token create --principal <admin user id> --roles instance_admin" >&2
fi

if [ ! -s "$SECRETS/scim.token" ]; then
  # The bootstrap admin: the principal of the first active personal access token with the
  # instance_admin role (`cairn token list` columns: ID INSTANCE PRINCIPAL KIND ROLES STATE).
  admin=$(cairn token list | awk '$4 == "pat" && $5 ~ /(^|,)instance_admin(,|$)/ { print $3; exit }')
  if [ -z "$admin" ]; then
    echo "cairn-init: no instance_admin token found; cannot create the SCIM token" >&2
    exit 1
  fi
  cairn token create --principal "$admin" --roles scim_provisioner --kind scim \
    --description "docker compose SCIM token" | sed -n 's/^token: *//p' >"$SECRETS/scim.token.tmp"
  [ -s "$SECRETS/scim.token.tmp" ] || { echo "cairn-init: cairn token create printed no token" >&2; exit 1; }
  mv "$SECRETS/scim.token.tmp" "$SECRETS/scim.token"
  echo "cairn-init: SCIM token written to $SECRETS/scim.token"
fi
echo "cairn-init: done (admin token: $SECRETS/admin.token, SCIM token: $SECRETS/scim.token)"
