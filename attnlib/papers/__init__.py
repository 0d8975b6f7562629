"""Study pipelines, one module per paper: the arms, data, training and report of each comparison."""

#: Every study by its command-line name (``attnlib train NAME``): ``"module:Class"``, imported when used.
STUDIES: dict[str, str] = {
    "gg-cam": "attnlib.papers.gg_cam:GGCAMStudy",
    "global-attention": "attnlib.papers.global_attention:GlobalAttentionStudy",
    "abn": "attnlib.papers.abn:ABNStudy",
    "gala": "attnlib.papers.gala:GALAStudy",
    "benchmark": "attnlib.papers.benchmark:AttentionBenchmark",
}
