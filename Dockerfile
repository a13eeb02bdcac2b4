# mirror-router in a container. The embedded GeoLite2 database comes with the package;
# mount a current City database and pass --geoip /data/GeoLite2-City.mmdb for production.
#   docker build -t mirror-router .
#   docker run -p 53:5300/udp -p 53:5300/tcp -p 80:8300 \
#              -v $PWD/zones:/zones:ro -v mirror-router-state:/state mirror-router
# Port 53 on the host maps to 5300 in the container, so the server needs no privilege
# (publish only 5300 and 8300 on a test machine). A named volume for /state is owned by
# the container's user; to keep the state file in a host folder instead, run as its
# owner:   docker run --user "$(id -u):$(id -g)" -v $PWD/state:/state ...
#   docker exec CONTAINER mirror-router admin --zones /zones set ID drain
# podman and buildah write OCI images by default, which drop HEALTHCHECK: build with
# "podman build --format docker", or check /readyz from your orchestrator instead.
# The base is pinned to a Python release and a Debian release; pin it by digest
# (python:3.11.11-slim-bookworm@sha256:...) for builds that must not move.
FROM python:3.11.11-slim-bookworm

WORKDIR /app
COPY pyproject.toml README.md LICENSE Dockerfile ./
COPY router ./router
# what the wheel ships under share/mirror-router/ (the example zone, the unit, settings)
COPY zones ./zones
COPY systemd ./systemd
COPY deploy ./deploy
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY zones /zones
# a user of its own (not nobody, whose files every other nobody process may touch)
RUN groupadd --system --gid 10001 mirror-router \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --shell /usr/sbin/nologin mirror-router \
    && mkdir /state && chown mirror-router:mirror-router /state && chmod 0770 /state

ENV STATE_DIRECTORY=/state
VOLUME /state
USER 10001:10001
EXPOSE 5300/udp 5300/tcp 8300/tcp
STOPSIGNAL SIGTERM
# Healthy = HTTP ready (first probe round done) and DNS answering over UDP (a root SOA
# query: any reply with our id will do).
HEALTHCHECK --interval=10s --timeout=3s \
    CMD python -c "import socket, urllib.request as u; u.urlopen('http://127.0.0.1:8300/readyz', timeout=2); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(bytes.fromhex('abcd00000001000000000000000006000001'), ('127.0.0.1', 5300)); assert s.recv(512)[:2] == bytes.fromhex('abcd')"
ENTRYPOINT ["mirror-router"]
CMD ["serve", "--zones", "/zones", "--dns", "0.0.0.0:5300", "--http", "0.0.0.0:8300", \
     "--log-format", "json"]
