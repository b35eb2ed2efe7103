//! Exporter pods on nodes that stopped answering: pure decisions (the I/O is in `exporter`).
//!
//! A pod on a node that is not Ready may still be running there with the volume mounted; nothing
//! the API server shows proves otherwise until the kubelet confirms the pod's deletion. Two
//! things do settle it: the node comes back (its kubelet finishes the deletion), or the Node
//! object is deleted (someone states the machine is gone; PodGC then removes its pods). So a
//! return never hands the PV back to the user's PVC while such a pod exists, says what it waits
//! for, and deletes the pod itself only once the Node object no longer exists.

use svdm_api::names;

/// What is known about the node an exporter pod is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Ready,
    /// The Node exists but its Ready condition is not True (NotReady or Unknown).
    NotReady,
    /// The Node object does not exist.
    Missing,
    /// The Node could not be read (e.g. no permission): never taken for missing, so a lack of
    /// information never leads to a forced deletion; nor reported as lost, since a healthy
    /// node looks the same (the I/O layer logs the failed read).
    Unknown,
}

/// The exporter pod as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExporterPod {
    pub name: String,
    pub uid: String,
    /// `spec.nodeName`; None while unscheduled.
    pub node: Option<String>,
    /// Only looked up when a decision needs it (a terminating pod, or one not ready while
    /// serving); None = not looked up.
    pub node_state: Option<NodeState>,
    pub deleting: bool,
}

/// What a return does about the exporter pod (after asking for its deletion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No pod that could use the volume remains.
    Proceed,
    /// The pod terminates on a healthy node: the volume may not be handed back yet, but other
    /// cleanup (deleting the export PVC, which Kubernetes keeps until the pod is gone) can go on.
    Wait,
    /// The pod is stuck on a node that does not answer: wait, and tell the user what ends it.
    WaitLostNode { message: String },
    /// The pod's Node object is gone: no kubelet will ever confirm the deletion, and the
    /// machine was declared gone, so deleting the pod without confirmation is safe.
    ForceDelete,
}

/// Decides for a return once the exporter pod is (being) deleted.
pub fn return_verdict(pod: Option<&ExporterPod>) -> Verdict {
    let Some(pod) = pod else {
        return Verdict::Proceed;
    };
    // Never scheduled: no kubelet ever saw it, so nothing mounts the volume (and the API server
    // removes such a pod at once when it is deleted).
    let Some(node) = pod.node.as_deref() else {
        return Verdict::Proceed;
    };
    match pod.node_state {
        Some(NodeState::Missing) => Verdict::ForceDelete,
        Some(NodeState::NotReady) => Verdict::WaitLostNode {
            message: format!(
                "waiting for exporter pod {}/{} on unreachable node {node} to terminate before the volume is given back; \
                 it ends when the node is back, or delete the Node if it is gone for good",
                names::MODULE_NAMESPACE,
                pod.name
            ),
        },
        Some(NodeState::Ready | NodeState::Unknown) | None => Verdict::Wait,
    }
}

/// Why an exporter pod cannot serve because of its node, while the export is running.
pub fn serving_problem(pod: &ExporterPod) -> Option<String> {
    let node = pod.node.as_deref()?;
    let pod_name = format!("{}/{}", names::MODULE_NAMESPACE, pod.name);
    match pod.node_state? {
        NodeState::Ready | NodeState::Unknown => None,
        NodeState::NotReady => Some(format!(
            "exporter pod {pod_name} is on node {node} which is not ready; the data is unreachable until the node is back. \
             Deleting the DataExport gives the volume back only once the node is back or its Node object is deleted"
        )),
        NodeState::Missing => Some(format!(
            "exporter pod {pod_name} is on node {node} which no longer exists; it is replaced once it is removed"
        )),
    }
}

/// Reads a Node's Ready condition from its conditions.
pub fn node_state_from_conditions<'a>(
    conditions: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> NodeState {
    let ready = conditions
        .into_iter()
        .any(|(type_, status)| type_ == "Ready" && status == "True");
    if ready {
        NodeState::Ready
    } else {
        NodeState::NotReady
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: Option<&str>, state: Option<NodeState>) -> ExporterPod {
        ExporterPod {
            name: "exp-1".into(),
            uid: "pod-uid".into(),
            node: node.map(Into::into),
            node_state: state,
            deleting: true,
        }
    }

    #[test]
    fn only_a_missing_node_allows_a_forced_deletion() {
        assert_eq!(return_verdict(None), Verdict::Proceed);
        assert_eq!(return_verdict(Some(&pod(None, None))), Verdict::Proceed);
        assert_eq!(
            return_verdict(Some(&pod(Some("n1"), Some(NodeState::Ready)))),
            Verdict::Wait
        );
        assert_eq!(return_verdict(Some(&pod(Some("n1"), None))), Verdict::Wait);
        // Not knowing is never a reason to force anything.
        assert_eq!(
            return_verdict(Some(&pod(Some("n1"), Some(NodeState::Unknown)))),
            Verdict::Wait
        );
        assert_eq!(
            return_verdict(Some(&pod(Some("n1"), Some(NodeState::Missing)))),
            Verdict::ForceDelete
        );
        match return_verdict(Some(&pod(Some("n1"), Some(NodeState::NotReady)))) {
            Verdict::WaitLostNode { message } => {
                assert!(message.contains("exporter pod"), "{message}");
                assert!(message.contains("n1"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_lost_node_message_says_what_ends_the_wait() {
        let Verdict::WaitLostNode { message } =
            return_verdict(Some(&pod(Some("node-7"), Some(NodeState::NotReady))))
        else {
            panic!("expected a wait");
        };
        assert!(message.contains("on unreachable node node-7 to terminate"));
        assert!(message.contains("delete the Node if it is gone for good"));
        assert!(message.contains("d8-storage-volume-data-manager/exp-1"));
    }

    #[test]
    fn serving_problems_name_the_node() {
        assert_eq!(
            serving_problem(&pod(Some("n1"), Some(NodeState::Ready))),
            None
        );
        assert_eq!(serving_problem(&pod(Some("n1"), None)), None);
        assert_eq!(
            serving_problem(&pod(Some("n1"), Some(NodeState::Unknown))),
            None
        );
        assert_eq!(serving_problem(&pod(None, Some(NodeState::NotReady))), None);
        let m = serving_problem(&pod(Some("n1"), Some(NodeState::NotReady))).unwrap_or_default();
        assert!(m.contains("is on node n1 which is not ready"), "{m}");
        let m = serving_problem(&pod(Some("n1"), Some(NodeState::Missing))).unwrap_or_default();
        assert!(m.contains("n1 which no longer exists"), "{m}");
    }

    #[test]
    fn node_readiness_comes_from_the_ready_condition() {
        assert_eq!(
            node_state_from_conditions([("MemoryPressure", "False"), ("Ready", "True")]),
            NodeState::Ready
        );
        assert_eq!(
            node_state_from_conditions([("Ready", "Unknown")]),
            NodeState::NotReady
        );
        assert_eq!(node_state_from_conditions([]), NodeState::NotReady);
    }
}
