"""Networks: one timm backbone factory and the method heads built on it."""
