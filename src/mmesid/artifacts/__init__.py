"""The on-disk artefacts, one owner each: item-embedding files, the semantic-ID export, run folders
(config, run.json, metrics, lock), atomic checkpoints, and the rules for where outputs may go.

Stages only call these modules; no stage reads or writes another stage's files by hand. This
package imports nothing from the stage packages.
"""
