#!/usr/bin/env bash
# A private cluster CA and one certificate per node for the control plane's mutual TLS (vmscatter.security.*).
#
#   VMSCATTER_CERT_PASSWORD=secret deploy/make-certs.sh DIR NODE[=SAN[,SAN...]] ...
#
# DIR/ca.crt, DIR/ca.key: the cluster CA (made once; an existing one is reused, so more nodes can be added later).
# DIR/NODE.pfx: NODE's key and certificate (CN=NODE, SANs: NODE and every SAN, an IP address or a DNS name;
#   EKU serverAuth + clientAuth: a node is the TLS server for its inbound links and the client for its outbound ones),
#   with the CA certificate bundled in: the CA a node trusts its peers by. An existing NODE.pfx is kept as it is.
# Every .pfx is protected by $VMSCATTER_CERT_PASSWORD (vmscatter.security.certificate-password).
# Needs openssl (Debian: apt-get install openssl).
set -euo pipefail
usage() { echo "usage: VMSCATTER_CERT_PASSWORD=... $0 DIR NODE[=SAN[,SAN...]] ...   (e.g. $0 /etc/vmscatter/tls host-1=10.0.0.1 host-2=10.0.0.2,host-2.example)" >&2; exit 2; }
(($# >= 2)) || usage
[[ -n ${VMSCATTER_CERT_PASSWORD:-} ]] || { echo "error: set VMSCATTER_CERT_PASSWORD (the password of every .pfx)" >&2; usage; }
command -v openssl >/dev/null || { echo "error: openssl is not installed (apt-get install openssl)" >&2; exit 1; }
dir=$1; shift
mkdir -p "$dir"
umask 077
days=${VMSCATTER_CERT_DAYS:-825}

if [[ ! -f $dir/ca.key || ! -f $dir/ca.crt ]]; then
  openssl req -x509 -new -newkey rsa:3072 -nodes -sha256 -days 3650 -keyout "$dir/ca.key" -out "$dir/ca.crt" \
    -subj "/CN=VMScatter cluster CA $(date -u +%Y%m%dT%H%M%SZ)-$RANDOM" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made CA $dir/ca.crt"
fi

san_of() { # "10.0.0.1" -> IP:10.0.0.1, "host.example" -> DNS:host.example
  if [[ $1 =~ ^[0-9]+(\.[0-9]+){3}$ || $1 == *:* ]]; then echo "IP:$1"; else echo "DNS:$1"; fi
}

for spec in "$@"; do
  node=${spec%%=*}
  [[ $node =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || { echo "error: '$node' is not a node name (letters, digits, . _ -)" >&2; exit 2; }
  if [[ -f $dir/$node.pfx ]]; then echo "kept $dir/$node.pfx"; continue; fi
  names=("$node"); [[ $spec == *=* ]] && IFS=, read -r -a extra <<<"${spec#*=}" && names+=("${extra[@]}")
  sans=(); for n in "${names[@]}"; do [[ -n $n ]] && sans+=("$(san_of "$n")"); done
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  cat >"$tmp/ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$(IFS=,; echo "${sans[*]}")
EXT
  openssl req -new -newkey rsa:2048 -nodes -keyout "$tmp/key" -out "$tmp/csr" -subj "/CN=$node" 2>/dev/null
  openssl x509 -req -in "$tmp/csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -CAserial "$dir/ca.srl" \
    -days "$days" -sha256 -extfile "$tmp/ext" -out "$tmp/crt" 2>/dev/null
  openssl pkcs12 -export -inkey "$tmp/key" -in "$tmp/crt" -certfile "$dir/ca.crt" -name "$node" \
    -out "$dir/$node.pfx.part" -passout env:VMSCATTER_CERT_PASSWORD
  mv "$dir/$node.pfx.part" "$dir/$node.pfx"
  rm -rf "$tmp"; trap - EXIT
  echo "made $dir/$node.pfx (${sans[*]})"
done
