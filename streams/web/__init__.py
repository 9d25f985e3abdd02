"""The operator's web views: a worker's dashboard, /lag, /entities and /metrics
(`install_views(worker)`), and the HTTP views of projection and process-manager processes.
"""

from kes.streams.web.httpviews import ViewServer, WebViews
from kes.streams.web.metrics import WorkerMetrics
from kes.streams.web.process import ProcessWeb
from kes.streams.web.projection import ProjectionWeb
from kes.streams.web.views import OperatorViews, install_views

__all__ = [
    "OperatorViews",
    "ProcessWeb",
    "ProjectionWeb",
    "ViewServer",
    "WebViews",
    "WorkerMetrics",
    "install_views",
]
