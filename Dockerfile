# Production image: `rehabfhir serve` (migrates once, then gunicorn gthread workers, which do not) against
# DATABASE_URL (PostgreSQL; compose.yaml brings one). tests/functional/test_docker_image.py runs
# this file's entry command, environment and health check as a non-root user without Docker.

# Build stage: the project and its dependencies in a virtual environment (sources stay here).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/rehabfhir
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY server ./server
COPY auth ./auth
COPY fhir_mapping ./fhir_mapping
COPY migrations ./migrations
RUN /opt/rehabfhir/bin/pip install .

# Runtime stage: the virtual environment only, run as `rehab`, which owns its data volume
# (export files and the audit witness; everything else in the image belongs to root).
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/rehabfhir --no-create-home rehab \
    && mkdir -p /var/lib/rehabfhir/export /var/lib/rehabfhir/audit \
    && chown -R rehab:rehab /var/lib/rehabfhir
COPY --from=build /opt/rehabfhir /opt/rehabfhir
ENV PATH=/opt/rehabfhir/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PORT=8080 \
    WEB_CONCURRENCY=4 \
    REHABFHIR_MODE=production \
    REHABFHIR_AUTO_MIGRATE=false \
    REHABFHIR_EXPORT_DIR=/var/lib/rehabfhir/export \
    REHABFHIR_AUDIT_WITNESS=/var/lib/rehabfhir/audit/witness.jsonl
VOLUME ["/var/lib/rehabfhir"]
WORKDIR /var/lib/rehabfhir
USER rehab
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=4)"
# Production mode needs REHABFHIR_SECRET_KEY; set REHABFHIR_BASE_URL to the public address.
CMD ["sh", "-c", "exec rehabfhir serve --host 0.0.0.0 --port \"$PORT\" --workers \"$WEB_CONCURRENCY\""]
