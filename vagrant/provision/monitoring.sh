#!/usr/bin/env bash
# Monitoring on the edge VM: Prometheus (Debian's package) scraping the proxy and the
# shield (vagrant/prometheus.yml), and Grafana with the edgestick dashboard
# (vagrant/grafana/edgestick-dashboard.json). VM only: it needs the internet.
# Grafana is not in Debian: it comes from Grafana's own apt repository, signed with
# Grafana's key (see vagrant/README.md).
set -euo pipefail
EDGESTICK_REPO=${EDGESTICK_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export DEBIAN_FRONTEND=noninteractive
log() { echo "provision[monitoring]: $*" >&2; }

apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends prometheus ca-certificates curl gpg >/dev/null
install -m 644 "$EDGESTICK_REPO/vagrant/prometheus.yml" /etc/prometheus/prometheus.yml
systemctl enable prometheus >/dev/null 2>&1
systemctl restart prometheus
log "prometheus on :9090 scraping the proxy (127.0.0.1:8405) and the shield (127.0.0.1:9107)"

if [ ! -e /etc/apt/sources.list.d/grafana.list ]; then
    install -d -m 755 /etc/apt/keyrings
    curl -fsSL https://apt.grafana.com/gpg.key | gpg --dearmor --yes -o /etc/apt/keyrings/grafana.gpg
    echo "deb [signed-by=/etc/apt/keyrings/grafana.gpg] https://apt.grafana.com stable main" \
        > /etc/apt/sources.list.d/grafana.list
    apt-get update -q >/dev/null
fi
apt-get install -y -q --no-install-recommends grafana >/dev/null

# Provisioned, not clicked: the data source and the dashboard folder are files.
cat > /etc/grafana/provisioning/datasources/edgestick.yaml <<YAML
apiVersion: 1
datasources:
  - name: Prometheus
    uid: edgestick-prometheus
    type: prometheus
    access: proxy
    url: http://127.0.0.1:9090
    isDefault: true
YAML
install -d -m 755 /var/lib/grafana/dashboards/edgestick
install -m 644 "$EDGESTICK_REPO/vagrant/grafana/edgestick-dashboard.json" /var/lib/grafana/dashboards/edgestick/
cat > /etc/grafana/provisioning/dashboards/edgestick.yaml <<YAML
apiVersion: 1
providers:
  - name: edgestick
    folder: edgestick
    type: file
    options:
      path: /var/lib/grafana/dashboards/edgestick
YAML
systemctl enable grafana-server >/dev/null 2>&1
systemctl restart grafana-server
log "grafana on :3000 (admin/admin on first login), dashboard 'edgestick'"
