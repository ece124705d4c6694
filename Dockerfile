# Production image: gunicorn (gthread) against DATABASE_URL (PostgreSQL).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY server ./server
COPY auth ./auth
COPY fhir_mapping ./fhir_mapping
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home rehab
USER rehab
ENV REHABFHIR_AUTO_MIGRATE=false
EXPOSE 8080
# Migrate once, then start the workers (they do not migrate themselves).
CMD ["sh", "-c", "rehabfhir db upgrade && exec gunicorn --worker-class gthread --workers ${WEB_CONCURRENCY:-4} --threads 8 --bind 0.0.0.0:8080 'server:create_app()'"]
