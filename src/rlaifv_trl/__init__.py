from .feedback import FeedbackConfig, FeedbackOutput, RLAIFVFeedbackGenerator, YesNoLabeler


__all__ = [
    "FeedbackConfig",
    "FeedbackOutput",
    "RLAIFVFeedbackGenerator",
    "YesNoLabeler",
]
