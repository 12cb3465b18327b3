# Sourced by cluster-config/local-cluster.sh and bench/run.sh: a throwaway CA and
# certificates made with the openssl command line. The caller sets TLS_DIR (where the files
# go) and TLS_DAYS (their validity), and defines die and info.

# Makes the CA ($TLS_DIR/ca.pem, ca-key.pem) unless it exists.
make_ca() {
  [[ -f $TLS_DIR/ca.pem && -f $TLS_DIR/ca-key.pem ]] && return 0
  command -v openssl >/dev/null || die "making certificates needs the openssl command line"
  mkdir -p "$TLS_DIR"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$TLS_DIR/ca-key.pem" -out "$TLS_DIR/ca.pem" -days "$TLS_DAYS" \
    -subj "/CN=${TLS_CA_NAME:-registry throwaway CA}" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null || die "openssl: making the CA failed"
  chmod 600 "$TLS_DIR/ca-key.pem"
  info "made a throwaway CA: $TLS_DIR/ca.pem"
}

# Makes certificate $1 (file name; subject CN $2, subject alternative names $3, may be empty)
# signed by the CA, unless it exists. Usable as server and client certificate.
make_cert() {
  local name=$1 cn=$2 san=$3 ext
  [[ -f $TLS_DIR/$name.pem && -f $TLS_DIR/$name-key.pem ]] && return 0
  ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth"
  [[ -n $san ]] && ext+=$'\n'"subjectAltName=$san"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$TLS_DIR/$name-key.pem" -out "$TLS_DIR/$name.csr" -subj "/CN=$cn" 2>/dev/null ||
    die "openssl: making the key of $name failed"
  openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca-key.pem" \
    -CAcreateserial -out "$TLS_DIR/$name.pem" -days "$TLS_DAYS" \
    -extfile <(printf '%s\n' "$ext") 2>/dev/null || die "openssl: signing $name failed"
  rm -f -- "$TLS_DIR/$name.csr"
  chmod 600 "$TLS_DIR/$name-key.pem"
}

