# The tracker demo as a service: sample APScheduler jobs behind the HTTP API, /metrics.
# docker-compose.yml builds it and points it at PostgreSQL. On its own:
#   docker build -t tracker-demo . && docker run -p 8000:8000 tracker-demo
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY tracker ./tracker
RUN pip install ".[postgresql,fastapi]" \
    && useradd --system --uid 10001 --home-dir /data --create-home tracker

# the default SQLite file (tracker.sqlite3) lands in the working directory
WORKDIR /data
USER tracker
EXPOSE 8000
CMD ["tracker", "demo", "--host", "0.0.0.0", "--port", "8000"]
