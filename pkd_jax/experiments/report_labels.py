"""What the paper runner's tables call each method, which methods a section shows, and the paper's own
RECOLA numbers they are printed next to."""

# RECOLA dev, mean CCC (valence, arousal) as the paper reports them (post-processed; docs/method.md).
PAPER_RECOLA = {
    "teacher": (0.472, 0.586),
    "teacher_black": (0.40, 0.53),
    "visual": (0.342, 0.457),
    "student": (0.428, 0.531),
    "student_nogate": (0.39, 0.50),
}
# Aff-Wild2 (strong setting, Table 6): no paper numbers are stored here; the table shows this run's only.
LABELS = {
    "teacher": "Teacher (audio + visual), frame retention",
    "teacher_black": "Teacher (audio + visual), black frames",
    "visual": "Visual-only baseline",
    "student": "Student (PKD, paper gate)",
    "student_nogate": "Student (PKD, no gate)",
    "student_mse": "Student (paper gate, MSE feature regression)",
    "student_similarity": "Student (paper gate, similarity-preserving)",
    "student_rkd": "Student (paper gate, relational KD)",
    "student_pkdot": "Student (paper gate, PKDOT optimal transport)",
    "student_response": "Student (paper gate, response CCC)",
    "teacher_pv": "Teacher (physio + visual)",
    "teacher_apv": "Teacher (audio + visual + physio)",
    "student_pv": "Student of the physio + visual teacher (paper gate)",
    "student_two": "Student of two teachers, A+V and P+V (paper gates, average)",
    "student_onestage": "Student, one-stage with its A+V teacher (no gate)",
    "student_shuffled": "Student (no gate) of the teacher shuffled across recordings",
    "teacher_all_labels": "Teacher (audio + visual) trained on every recording's labels",
    "student_all_labels_teacher": "Student (no gate) of the teacher trained on every recording's labels",
    "student_mse_all_labels_teacher": "Student (no gate, response MSE, alpha 0.5) of that teacher",
    "student_mse_all_labels_shuffled": "The same student of that teacher shuffled across recordings",
}
# The pipeline's positive control (`configs/demo.py:controls`): a teacher with every recording's labels
# and its students.
ALL_LABELS = (
    "teacher_all_labels", "student_all_labels_teacher", "student_mse_all_labels_teacher",
    "student_mse_all_labels_shuffled",
)  # fmt: skip
CONTROLS = ("visual", "student_nogate", "student_shuffled", *ALL_LABELS)
# `configs/demo.py:beyond`'s methods, their references first.
BEYOND = ("teacher", "teacher_pv", "teacher_apv", "visual", "student", "student_pv", "student_two",
          "student_nogate", "student_onestage")  # fmt: skip
