# forcelink's image for docker-compose.yml and production: one Python
# process type, `forcelink run`, configured by FORCELINK_* variables.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY forcelink forcelink
COPY connector connector
COPY processors processors
COPY api api
COPY emulator emulator
COPY migrations migrations
COPY mappings mappings
RUN pip install --no-cache-dir .
EXPOSE 8080 9400
ENTRYPOINT ["forcelink"]
CMD ["run"]
