"""Conventional sequential recommenders: SASRec (Stage-1 collaborative encoder and baseline)."""
