"""data/gm_solos"""
