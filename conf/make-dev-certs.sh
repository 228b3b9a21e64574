#!/usr/bin/env bash
# Development and test certificates for qagw's TLS workers, made with the openssl CLI.
#
#   conf/make-dev-certs.sh [--force] DIR
#
# DIR gets:
#   ca.crt, ca.key                 a dev CA (EC P-256), the one agents trust in development
#   server.crt, server.key         signed by it for localhost, 127.0.0.1 and ::1 (SAN)
# and, for the black-box tests of failed verification:
#   expired.crt, expired.key       same CA and names, validity wholly in the past
#   wrong-host.crt, wrong-host.key same CA, for not-this-host.example only
#   other-ca.crt, other-ca.key     an unrelated CA (a client trusting it must fail)
#
# Idempotent: does nothing when DIR/server.crt exists, unless --force. `make certs` runs
# it for conf/dev/ (the default [tls] cert and key of conf/qagw.conf). Nothing made here
# is for production: the keys are unencrypted and the CA is throwaway.
set -euo pipefail

force=0
dir=""
for a in "$@"; do
	case "$a" in
	--force) force=1 ;;
	-h | --help)
		sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	-*)
		echo "make-dev-certs.sh: unknown option $a" >&2
		exit 2
		;;
	*) dir="$a" ;;
	esac
done
if [ -z "$dir" ]; then
	echo "usage: make-dev-certs.sh [--force] DIR" >&2
	exit 2
fi

want="ca.crt ca.key server.crt server.key expired.crt expired.key wrong-host.crt wrong-host.key other-ca.crt other-ca.key"
if [ "$force" = 0 ]; then
	missing=0
	for f in $want; do [ -s "$dir/$f" ] || missing=1; done
	if [ "$missing" = 0 ]; then
		echo "make-dev-certs.sh: $dir already has the dev certificates (--force to remake)"
		exit 0
	fi
fi

mkdir -p "$dir"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# A self-signed CA: $1 = file stem, $2 = common name.
make_ca() {
	newkey "$work/$1.key"
	openssl req -x509 -new -key "$work/$1.key" -sha256 -days 3650 -subj "/CN=$2" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" \
		-out "$work/$1.crt"
}

# A server certificate signed by the CA through `openssl ca`, which (unlike `x509 -req` in
# OpenSSL 3.0) takes an explicit start date, so a certificate can lie wholly in the past.
# $1 = stem, $2 = CN, $3 = subjectAltName, $4 = startdate, $5 = enddate (YYMMDDHHMMSSZ).
make_server() {
	newkey "$work/$1.key"
	openssl req -new -key "$work/$1.key" -subj "/CN=$2" -out "$work/$1.csr"
	cat >"$work/$1.ext" <<-EOF
		basicConstraints = critical,CA:FALSE
		keyUsage = critical,digitalSignature,keyEncipherment
		extendedKeyUsage = serverAuth
		subjectAltName = $3
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
	EOF
	openssl ca -batch -config "$work/ca.cnf" -notext -md sha256 \
		-startdate "$4" -enddate "$5" -extfile "$work/$1.ext" \
		-in "$work/$1.csr" -out "$work/$1.crt" 2>"$work/$1.log" ||
		{
			cat "$work/$1.log" >&2
			exit 1
		}
}

make_ca ca "qagw dev CA"
make_ca other-ca "an unrelated CA"

mkdir -p "$work/ca.db"
: >"$work/ca.db/index.txt"
echo 1000 >"$work/ca.db/serial"
cat >"$work/ca.cnf" <<EOF
[ ca ]
default_ca = dev
[ dev ]
dir = $work/ca.db
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
certificate = $work/ca.crt
private_key = $work/ca.key
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
EOF

fmt='+%y%m%d%H%M%SZ'
now_minus() { date -u -d "$1" "$fmt"; }
make_server server localhost "DNS:localhost,IP:127.0.0.1,IP:::1" \
	"$(now_minus '-1 day')" "$(now_minus '+825 days')"
make_server expired localhost "DNS:localhost,IP:127.0.0.1,IP:::1" \
	"$(now_minus '-60 days')" "$(now_minus '-30 days')"
make_server wrong-host not-this-host.example "DNS:not-this-host.example" \
	"$(now_minus '-1 day')" "$(now_minus '+825 days')"

for f in $want; do cp "$work/$f" "$dir/$f"; done
chmod 600 "$dir"/*.key
chmod 644 "$dir"/*.crt
echo "make-dev-certs.sh: wrote the dev CA, server, expired, wrong-host and other-ca certificates to $dir"
