# llama-gateway container image.
#   docker build -t llama-gateway .
#   docker run --rm -p 8000:8000 -p 8100:8100 \
#     -v "$PWD/config.yaml:/etc/llama-gateway/config.yaml:ro" llama-gateway
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LLAMA_GATEWAY_CONFIG=/etc/llama-gateway/config.yaml \
    LLAMA_GATEWAY_HOST=0.0.0.0 \
    LLAMA_GATEWAY_STATUS_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY balancers ./balancers
# The redis extra: rate limits shared between replicas (rate_limiting.strategy: redis).
RUN pip install './[redis]' \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /etc/llama-gateway \
    && cp /dev/null /etc/llama-gateway/.keep

# The config is mounted here (read-only is fine); LLAMA_GATEWAY_CONFIG points at it.
VOLUME ["/etc/llama-gateway"]
USER 10001
EXPOSE 8000 8100

# Liveness only: /healthz never depends on upstream health.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8100/healthz', timeout=2)"]

# SIGTERM (docker stop, Kubernetes) drains: readiness 503, in-flight work finishes.
STOPSIGNAL SIGTERM
ENTRYPOINT ["llama-gateway"]
# Addresses come from the environment above, so `docker run -e LLAMA_GATEWAY_PORT=…`
# (or a Kubernetes env) changes them without replacing the command.
CMD ["serve"]
