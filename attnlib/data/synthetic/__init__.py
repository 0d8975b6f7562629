"""The synthetic default datasets (one per paper, written in a real layout or a documented one) and the
profile's generated copies (:mod:`attnlib.data.synthetic.defaults`)."""
