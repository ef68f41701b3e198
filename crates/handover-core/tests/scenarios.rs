use expect_test::expect;
use handover_core::sim::{Sim, SimConfig};

#[test]
fn s01_guest_handover() {
    let mut sim = Sim::new(SimConfig::default());
    sim.start();
    sim.agent_joins("Jane");
    sim.agent_says("Hi");
    expect![[r#""#]].assert_eq(&sim.take_log());
}
