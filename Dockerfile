# mirror-router in a container. The embedded GeoLite2 database comes with the package;
# mount a current City database and pass --geoip /data/GeoLite2-City.mmdb for production.
#   docker build -t mirror-router .
#   docker run -p 5300:5300/udp -p 5300:5300/tcp -p 8300:8300 \
#              -v $PWD/zones:/zones:ro -v mirror-router-state:/state mirror-router
#   docker exec CONTAINER mirror-router admin set tyo drain   (overrides in /state)
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY router ./router
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY zones /zones
RUN mkdir /state && chown nobody /state

ENV STATE_DIRECTORY=/state
VOLUME /state
USER nobody
EXPOSE 5300/udp 5300/tcp 8300/tcp
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8300/healthz', timeout=2)"
ENTRYPOINT ["mirror-router"]
CMD ["serve", "--zones", "/zones", "--dns", "0.0.0.0:5300", "--http", "0.0.0.0:8300", \
     "--log-format", "json"]
