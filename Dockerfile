# The kes worker image used by docker-compose.yml: the project installed into a slim Python.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY streams ./streams
COPY topology ./topology
COPY stores ./stores
COPY schemas ./schemas
COPY examples ./examples
RUN pip install --no-cache-dir .
ENV KES_DATA_DIR=/data KES_WEB_HOST=0.0.0.0 KES_WEB_PORT=6066
VOLUME /data
EXPOSE 6066
ENTRYPOINT ["kes"]
CMD ["worker", "kes.examples.bank"]
