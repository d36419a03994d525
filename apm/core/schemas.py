"""Every Parquet table the system writes, defined once.

The README documents these column by column; ``tests/test_schemas.py`` keeps the two in step.
"""
from __future__ import annotations

import pyarrow as pa

#: Number of score bins in AVA (scores 1..10).
NUM_BINS = 10
#: An image counts as "high quality" when its mean score is at least this (the AVA convention).
HIGH_SCORE_THRESHOLD = 5.0

VOTES_TYPE = pa.list_(pa.int32(), NUM_BINS)

#: ``prepare_ava`` output: one row per line of ``AVA.txt``.
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("uri", pa.string()),  # photo location; null when no --images was given
        pa.field("votes", VOTES_TYPE, nullable=False),  # votes[k] = number of votes for score k+1
        pa.field("n_votes", pa.int32(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("std", pa.float64(), nullable=False),  # population std of the votes
        pa.field("semantics_known", pa.bool_(), nullable=False),  # False where AVA.txt says -1
        pa.field("tag1_id", pa.int32()),  # null when absent (0) or unknown (-1)
        pa.field("tag1_name", pa.string()),
        pa.field("tag2_id", pa.int32()),
        pa.field("tag2_name", pa.string()),
        pa.field("challenge_id", pa.int32()),
        pa.field("challenge_name", pa.string()),
        pa.field("split", pa.string()),  # 'train' (generic_ls_train) | 'test' (generic_test) | null
        pa.field("image_lists", pa.list_(pa.string()), nullable=False),  # every .jpgl naming the image
        pa.field("style_ids", pa.list_(pa.int32())),  # null when not in the style lists
        pa.field("style_names", pa.list_(pa.string())),
        pa.field("style_split", pa.string()),  # 'train' | 'test' | null
        pa.field("image_status", pa.string()),  # 'ok' | 'missing' | 'unreadable' | null (not checked)
        pa.field("image_error", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("source_line", pa.int32(), nullable=False),  # 1-based line in AVA.txt
    ]
)

#: ``make_synthetic`` sidecar ``truth.parquet``: what generated each synthetic image.
SYNTHETIC_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("category_id", pa.int32(), nullable=False),
        pa.field("blur", pa.float32(), nullable=False),
        pa.field("exposure", pa.float32(), nullable=False),
        pa.field("contrast", pa.float32(), nullable=False),
        pa.field("saturation", pa.float32(), nullable=False),
        pa.field("harmony", pa.float32(), nullable=False),
        pa.field("noise", pa.float32(), nullable=False),
        pa.field("tilt", pa.float32(), nullable=False),
        pa.field("subject_x", pa.float32(), nullable=False),
        pa.field("subject_y", pa.float32(), nullable=False),
        pa.field("subject_size", pa.float32(), nullable=False),
        pa.field("clutter", pa.float32(), nullable=False),
        pa.field("background_darkness", pa.float32(), nullable=False),
        pa.field("thirds_distance", pa.float32(), nullable=False),
        pa.field("latent", pa.float32(), nullable=False),  # aesthetic latent (standard-normal scale)
        pa.field("true_pmf", pa.list_(pa.float32(), NUM_BINS), nullable=False),  # rating distribution
        pa.field("true_mean", pa.float32(), nullable=False),  # expectation of true_pmf
        pa.field("n_votes", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # 'train' | 'test'
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("mask_uri", pa.string(), nullable=False),  # PNG, 255 = subject
        pa.field("subject_bbox", pa.list_(pa.int32(), 4), nullable=False),  # x0, y0, x1, y1 (pixels)
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)

#: ``fit_distributions`` output ``per_image.parquet``: one row per manifest row.
PER_IMAGE_FIT_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("n_votes", pa.int32(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("std", pa.float64(), nullable=False),
        pa.field("skewness", pa.float64(), nullable=False),
        pa.field("method", pa.string(), nullable=False),  # 'moments' | 'mle' | 'lsq'
        pa.field("gaussian_mu", pa.float64(), nullable=False),
        pa.field("gaussian_sigma", pa.float64(), nullable=False),
        pa.field("gamma_shape", pa.float64(), nullable=False),  # Gamma on the score
        pa.field("gamma_scale", pa.float64(), nullable=False),
        pa.field("gamma_mirrored_shape", pa.float64(), nullable=False),  # Gamma on 11 - score
        pa.field("gamma_mirrored_scale", pa.float64(), nullable=False),
        pa.field("rmse_gaussian", pa.float64(), nullable=False),  # vs the normalised histogram
        pa.field("rmse_gamma", pa.float64(), nullable=False),
        pa.field("rmse_gamma_mirrored", pa.float64(), nullable=False),
        pa.field("best_family", pa.string(), nullable=False),  # family with the lowest RMSE
    ]
)

#: ``fit_distributions`` output ``bucket_rmse.parquet``: mean RMSE per mean-score bucket.
BUCKET_RMSE_SCHEMA = pa.schema(
    [
        pa.field("bucket", pa.string(), nullable=False),  # '[1,2)' .. '[8,9)', or 'overall'
        pa.field("bucket_low", pa.float64(), nullable=False),
        pa.field("bucket_high", pa.float64(), nullable=False),
        pa.field("n_images", pa.int64(), nullable=False),
        pa.field("rmse_gaussian", pa.float64()),  # null for an empty bucket
        pa.field("rmse_gamma", pa.float64()),
        pa.field("rmse_gamma_mirrored", pa.float64()),
    ]
)

#: ImageNet classes of a teacher's softmax, and how many of the most likely it names.
NUM_IMAGENET_CLASSES = 1000
TEACHER_TOP_K = 5

#: ``teacher_softmax`` output ``teacher.parquet``: an ImageNet teacher's softmax per photo.
TEACHER_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string()),  # the photo; null only for a manifest row without one
        pa.field("image_id", pa.int64()),  # from the manifest or a numeric file name; else null
        pa.field("probs", pa.list_(pa.float32(), NUM_IMAGENET_CLASSES)),  # null when 'error'
        pa.field("top5_ids", pa.list_(pa.int32(), TEACHER_TOP_K)),  # most likely first
        pa.field("top5_names", pa.list_(pa.string())),
        pa.field("top5_probs", pa.list_(pa.float32(), TEACHER_TOP_K)),
        pa.field("status", pa.string(), nullable=False),  # 'ok' | 'error'
        pa.field("error", pa.string()),  # why there is no softmax; null when 'ok'
        pa.field("teacher", pa.string(), nullable=False),  # registry name, e.g. efficientnet_lite0
    ]
)

#: ``evaluate`` output ``metrics.parquet``: one row per evaluated model (variant) and category.
EVALUATION_SCHEMA = pa.schema(
    [
        pa.field("variant", pa.string(), nullable=False),  # name of the evaluated model
        pa.field("model_uri", pa.string(), nullable=False),  # its checkpoint
        pa.field("category", pa.string(), nullable=False),  # 'overall' or a semantic category
        pa.field("n_images", pa.int64(), nullable=False),  # photos scored
        pa.field("kldiv", pa.float64()),  # null for the mean-regression head (no distribution)
        pa.field("cdloss", pa.float64()),
        pa.field("mse", pa.float64()),  # of the mean score; null when no photo was scored
        pa.field("spearman", pa.float64()),  # NaN where undefined (e.g. one image)
        pa.field("pearson", pa.float64()),
        pa.field("accuracy", pa.float64()),  # high (mean >= 5) vs low
        pa.field("n_errors", pa.int64(), nullable=False),  # photos that could not be scored
    ]
)

#: ``score`` input listing ``OUT/_listing/part-*.parquet``: every object to score, in order.
LISTING_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string()),  # null only for a manifest row without a photo
        pa.field("image_id", pa.int64()),  # from a manifest or a numeric file name; else null
        pa.field("size", pa.int64()),  # bytes; null when not listed (manifest input)
        pa.field("mtime", pa.timestamp("ms", tz="UTC")),  # last modified; null when unknown
        pa.field("etag", pa.string()),  # S3 ETag; null on local files
        pa.field("error", pa.string()),  # known before reading (e.g. manifest image_status)
        pa.field("shard", pa.string()),  # the tar shard or Parquet file holding it; else null
        pa.field("key", pa.string()),  # its WebDataset key, or its Parquet id; else null
        pa.field("offset", pa.int64()),  # its data's byte offset in the tar / row in the file
        pa.field("meta", pa.string()),  # a tar member's KEY.json, as JSON text; else null
    ]
)

#: Length of the ``embedding`` column is the backbone's feature size (512 for resnet18).
EMBEDDING_TYPE = pa.list_(pa.float16())

#: ``score`` output ``OUT/scores/part-*.parquet``: exactly one row per listed object.
#: The folder under a scoring job's OUT that holds its SCORES_SCHEMA shards.
SCORES_FOLDER = "scores"

SCORES_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string()),  # the object; null only for a manifest row without one
        pa.field("image_id", pa.int64()),  # from a manifest or a numeric file name; else null
        pa.field("size", pa.int64()),  # bytes, from the listing; null when not listed
        pa.field("shard", pa.string()),  # tar shard / Parquet file of the photo; null for objects
        pa.field("key", pa.string()),  # WebDataset key / Parquet id within the shard; else null
        pa.field("meta", pa.string()),  # the member's KEY.json (JSON text); else null
        pa.field("status", pa.string(), nullable=False),  # 'ok' | 'error'
        pa.field("error", pa.string()),  # why it could not be scored; null when 'ok'
        pa.field("error_kind", pa.string()),  # 'permanent' | 'transient' (a store fault); null when 'ok'
        pa.field("width", pa.int32()),  # pixels as stored (before EXIF rotation); null on error
        pa.field("height", pa.int32()),
        pa.field("dist", pa.list_(pa.float32(), NUM_BINS)),  # null on error or for a mean head
        pa.field("mean", pa.float32()),  # predicted mean score (1..10); null on error
        pa.field("std", pa.float32()),  # std of ``dist``; null on error or for a mean head
        pa.field("is_high", pa.bool_()),  # mean >= 5; null on error
        pa.field("top5_ids", pa.list_(pa.int32(), TEACHER_TOP_K)),  # semantic head, best first
        pa.field("top5_names", pa.list_(pa.string())),
        pa.field("top5_probs", pa.list_(pa.float32(), TEACHER_TOP_K)),
        pa.field("embedding", EMBEDDING_TYPE),  # pooled backbone features; null if not asked for
        pa.field("model_id", pa.string(), nullable=False),  # hash of the checkpoint
        pa.field("scored_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)

#: ``cluster`` output ``clusters.parquet``: the cluster of every scored photo.
CLUSTERS_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string()),
        pa.field("image_id", pa.int64()),
        pa.field("cluster_id", pa.int32(), nullable=False),
        pa.field("distance", pa.float32(), nullable=False),  # Euclidean, to its centroid
    ]
)

#: ``cluster`` output ``cluster_summary.parquet``: one row per cluster.
CLUSTER_SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("cluster_id", pa.int32(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),  # photos in the cluster
        pa.field("centroid", pa.list_(pa.float32()), nullable=False),  # in feature space
        pa.field("top_classes", pa.list_(pa.string()), nullable=False),  # commonest top-1 classes
        pa.field("top_class_shares", pa.list_(pa.float32()), nullable=False),  # their shares
        pa.field("mean_score", pa.float64()),  # average predicted mean; null for an empty cluster
        pa.field("score_hist", pa.list_(pa.int64(), NUM_BINS), nullable=False),  # means in [k, k+1)
    ]
)

#: ``explain`` output ``OUT/explanations.parquet``: one row per explained photo and direction.
EXPLANATIONS_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string()),  # the photo
        pa.field("image_id", pa.int64()),  # from a manifest, scores table or numeric file name
        pa.field("direction", pa.string(), nullable=False),  # 'lower' | 'raise'
        pa.field("status", pa.string(), nullable=False),  # 'ok' | 'error'
        pa.field("error", pa.string()),  # why it could not be explained; null when 'ok'
        pa.field("score_before", pa.float32()),  # predicted mean of the crop; null on error
        pa.field("score_after", pa.float32()),  # predicted mean of the perturbed crop
        pa.field("delta", pa.float32()),  # score_after - score_before
        pa.field("norm", pa.string(), nullable=False),  # 'linf' | 'l2'
        pa.field("budget", pa.float32(), nullable=False),  # radius of the ball, [0, 1] pixel units
        pa.field("steps", pa.int32(), nullable=False),
        pa.field("perturbation_norm", pa.float32()),  # size of the perturbation in `norm`
        pa.field("crop_size", pa.int32(), nullable=False),  # side of the model's input crop
        pa.field("peak_bbox", pa.list_(pa.int32(), 4)),  # x0, y0, x1, y1 in crop pixels
        pa.field("heatmap_uri", pa.string()),  # 8-bit grayscale PNG; null on error
        pa.field("panel_uri", pa.string()),  # original | modified | overlay; null on error / off
        pa.field("model_id", pa.string(), nullable=False),
    ]
)

#: ``generate`` output ``OUT/samples.parquet``: one row per PFAGAN sample.
SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),  # row number; the grid's order
        pa.field("seed", pa.int64(), nullable=False),  # the noise; (checkpoint, seed, condition) redraws it
        pa.field("category", pa.string(), nullable=False),  # conditioning category
        pa.field("category_id", pa.int32(), nullable=False),
        pa.field("histogram", pa.list_(pa.float32(), NUM_BINS), nullable=False),  # conditioning, sums to 1
        pa.field("condition_mean", pa.float32(), nullable=False),  # mean score of `histogram`
        pa.field("image_png", pa.binary(), nullable=False),  # the sample, PNG at the GAN's resolution
        pa.field("pred_dist", pa.list_(pa.float32(), NUM_BINS)),  # the APM's distribution; null without --apm
        pa.field("pred_mean", pa.float32()),  # the APM's mean score; null without --apm
        pa.field("pred_category", pa.string()),  # the classifier's category; null without --classifier
        pa.field("pred_category_prob", pa.float32()),  # its probability
        pa.field("generator_id", pa.string(), nullable=False),  # sha256 of the generator checkpoint
        pa.field("apm_id", pa.string()),  # sha256 of the judging APM checkpoint (or random:ARCH)
        pa.field("generated_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)

ALL_SCHEMAS: dict[str, pa.Schema] = {
    "manifest.parquet": MANIFEST_SCHEMA,
    "truth.parquet": SYNTHETIC_TRUTH_SCHEMA,
    "per_image.parquet": PER_IMAGE_FIT_SCHEMA,
    "bucket_rmse.parquet": BUCKET_RMSE_SCHEMA,
    "teacher.parquet": TEACHER_SCHEMA,
    "metrics.parquet": EVALUATION_SCHEMA,
    "_listing/part-*.parquet": LISTING_SCHEMA,
    "scores/part-*.parquet": SCORES_SCHEMA,
    "clusters.parquet": CLUSTERS_SCHEMA,
    "cluster_summary.parquet": CLUSTER_SUMMARY_SCHEMA,
    "explanations.parquet": EXPLANATIONS_SCHEMA,
    "samples.parquet": SAMPLES_SCHEMA,
}
